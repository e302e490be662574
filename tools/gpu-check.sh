#!/usr/bin/env bash
# One-call GPU check for the device machine (tool `run`): configure + build (build-gpu, Release),
# CUDA kernel tests, CUDA-vs-CPU parity on the tiny config, the full-config parity check
# (1 camera, horizon 10: GPU vs the CPU backend), then `pi0 bench`. Logs go to $OUT; a
# short table is printed last.
#
#   tools/gpu-check.sh [all|tests|bench|quick|kernels]   (default all; quick: build pi0 only, bench_main and
#        one bench per entry of BENCH_VARIANTS="VAR=1;VAR2=1 VAR3=1", then one interleaved A/B per entry of
#        BENCH_AB="PI0_CUDA_X;PI0_CUDA_Y" (pi0 bench with PI0_CUDA_AB: the variant toggled in a second session,
#        alternating blocks; judge small changes by its paired difference, not by separate processes, which
#        drift by +-0.2-0.3 ms), no tests; kernels: build and run test_kernels only)
#   tools/gpu-check.sh make-deps           (here, before the first run: fill .deps/, see below)
#   device call: run(command="tools/gpu-check.sh all", carry=[".deps"])
#   env: BENCH_RUNS (200), SKIP_FULL=1 (no full-config parity), BUDGET_S (570: the full-config
#        parity gets what is left of it), BENCH_ALT_ENV="VAR=1" (one more bench with a variant
#        switched on, e.g. PI0_CUDA_SKINNY=1, PI0_CUDA_FUSED_ATTN=1, PI0_CUDA_TUNE=1,
#        PI0_CUDA_EXPERT_GEMM_ATTN=1, PI0_CUDA_MQA_ROWS64=1, PI0_CUDA_MQA_MERGE_ROW=1,
#        PI0_CUDA_MQA_V13=1, PI0_CUDA_NO_FLASH_ATTN=1, PI0_CUDA_PDL=1, PI0_CUDA_NO_TUNE=1,
#        PI0_CUDA_FLASH_MMA=1, PI0_CUDA_XPART=1, PI0_CUDA_VIT_CHAINS=1, PI0_CUDA_L2_KV=1,
#        PI0_CUDA_MQA_PUSH2=1, PI0_CUDA_RESID_EPILOGUE=1, PI0_CUDA_MQA_K64=1,
#        PI0_CUDA_MQA_F32=1),
#        OPTIME_ENV (env for the per-op breakdown run), PI0_TEST_EXP=<PI0_EXP_* bits> (the parity
#        tests' GPU sessions run with those variants)
#
# When the machine lacks cJSON / OpenBLAS, a carried .deps/ (include/, lib/) is used.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
if [ "$MODE" = make-deps ]; then
    # Run HERE (not on the device): copy cJSON, OpenBLAS (+ libgfortran/libquadmath), wslay and msgpack-c
    # headers and libraries of this Debian/Ubuntu machine into .deps/ (ignored by git), then pass
    # carry=[".deps"] to the device `run` call. The device image lacks them.
    set -e
    L=/usr/lib/x86_64-linux-gnu
    mkdir -p .deps/include/cjson .deps/include/wslay .deps/include/msgpack .deps/lib
    grep -qx '/.deps/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.deps/' >>.git/info/exclude; }
    cp /usr/include/cjson/cJSON.h .deps/include/cjson/
    cp /usr/include/x86_64-linux-gnu/openblas-pthread/*.h .deps/include/ 2>/dev/null || cp /usr/include/x86_64-linux-gnu/cblas.h .deps/include/
    cp /usr/include/wslay/*.h .deps/include/wslay/
    cp /usr/include/msgpack.h .deps/include/ && cp /usr/include/msgpack/*.h .deps/include/msgpack/
    cp "$(readlink -f $L/libopenblas.so.0)" .deps/lib/libopenblas.so.0 && ln -sf libopenblas.so.0 .deps/lib/libopenblas.so
    cp "$(readlink -f $L/libcjson.so.1)" .deps/lib/libcjson.so.1 && ln -sf libcjson.so.1 .deps/lib/libcjson.so
    cp "$(readlink -f $L/libgfortran.so.5)" .deps/lib/libgfortran.so.5
    cp "$(readlink -f $L/libquadmath.so.0)" .deps/lib/libquadmath.so.0
    cp "$(readlink -f $L/libwslay.so.1)" .deps/lib/libwslay.so.1 && ln -sf libwslay.so.1 .deps/lib/libwslay.so
    cp "$(readlink -f $L/libmsgpackc.so.2)" .deps/lib/libmsgpackc.so.2 && ln -sf libmsgpackc.so.2 .deps/lib/libmsgpackc.so
    du -sh .deps
    exit 0
fi
OUT=${OUT:-/tmp/pi0-gpu-check}
mkdir -p "$OUT"
LOG=$OUT/gpu-check.log
: >"$LOG"
say() { echo "$@" | tee -a "$LOG"; }
runlog() { # runlog NAME TIMEOUT CMD... : run, tee into $OUT/NAME.log and the main log, record status
    local name=$1 to=$2
    shift 2
    say "=== $name: $*"
    local t0=$(date +%s%N)
    local dst="$OUT/$name.log"
    case $name in configure | build) dst="/tmp/pi0-$name.log" ;; esac
    timeout "$to" "$@" 2>&1 | tee "$dst" | tee -a "$LOG" | tail -n 60
    local rc=${PIPESTATUS[0]}
    local t1=$(date +%s%N)
    say "=== $name: rc=$rc ($(( (t1 - t0) / 1000000 )) ms)"
    STATUS+=("$name rc=$rc")
    return $rc
}
STATUS=()
START=$(date +%s)
COMMIT=$(git rev-parse --verify -q HEAD 2>/dev/null || echo uncommitted)
[ -n "$(git status --porcelain 2>/dev/null)" ] && COMMIT="$COMMIT+uncommitted-changes"
# the device copy's git metadata can lag the tree it was given: PI0_COMMIT=<sha> names the tree instead
[ -n "${PI0_COMMIT:-}" ] && COMMIT="$PI0_COMMIT (PI0_COMMIT; git here: $COMMIT)"
say "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "commit: $COMMIT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,memory.total --format=csv 2>&1 | tee -a "$LOG"
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

ARGS=(-DCMAKE_BUILD_TYPE=Release)
command -v ninja >/dev/null && ARGS+=(-G Ninja)
if [ ! -f /usr/include/cjson/cJSON.h ] && [ -d .deps ]; then
    ARGS+=(-DCJSON_INCLUDE_DIR="$PWD/.deps/include" -DCJSON_LIBRARY="$PWD/.deps/lib/libcjson.so")
    export LD_LIBRARY_PATH="$PWD/.deps/lib:${LD_LIBRARY_PATH:-}"
fi
if ! ls /usr/include/cblas.h /usr/include/*/cblas.h >/dev/null 2>&1 && [ -d .deps ]; then
    ARGS+=(-DCBLAS_INCLUDE_DIR="$PWD/.deps/include" -DOPENBLAS_LIBRARY="$PWD/.deps/lib/libopenblas.so")
    export LD_LIBRARY_PATH="$PWD/.deps/lib:${LD_LIBRARY_PATH:-}"
fi
if [ ! -f /usr/include/wslay/wslay.h ] && [ -f .deps/include/wslay/wslay.h ]; then # pi0 serve deps
    ARGS+=(-DWSLAY_INCLUDE_DIR="$PWD/.deps/include" -DWSLAY_LIBRARY="$PWD/.deps/lib/libwslay.so"
        -DMSGPACK_INCLUDE_DIR="$PWD/.deps/include" -DMSGPACK_LIBRARY="$PWD/.deps/lib/libmsgpackc.so")
    export LD_LIBRARY_PATH="$PWD/.deps/lib:${LD_LIBRARY_PATH:-}"
fi
runlog configure 300 cmake -B build-gpu "${ARGS[@]}" . || { printf '%s\n' "${STATUS[@]}"; exit 1; }
TARGET=()
[ "$MODE" = quick ] && TARGET=(--target pi0_cli)
[ "$MODE" = kernels ] && TARGET=(--target test_kernels)
runlog build 600 cmake --build build-gpu -j "$(nproc)" "${TARGET[@]}" || { printf '%s\n' "${STATUS[@]}"; exit 1; }
if [ "$MODE" = quick ]; then
    R=${BENCH_RUNS:-100}
    BENCH="./build-gpu/pi0 bench --backend cuda --horizon 50 --cameras 3 --prompt-len 20 --runs $R"
    runlog bench_main 240 $BENCH
    i=0
    IFS=';' read -ra VARS <<<"${BENCH_VARIANTS:-}"
    for v in "${VARS[@]}"; do
        i=$((i + 1))
        runlog "bench_v$i" 240 env $v $BENCH
    done
    IFS=';' read -ra ABS <<<"${BENCH_AB:-}"
    for v in "${ABS[@]}"; do
        runlog "bench_ab_$v" 300 env PI0_CUDA_AB=$v $BENCH --stage-runs 3
    done
    [ -n "${OPTIME_ENV+x}" ] && runlog bench_optime 240 env PI0_CUDA_OPTIME=1 $OPTIME_ENV $BENCH --runs 5 --warmup 2 --stage-runs 20
    echo; echo "================ quick summary ($DEVICE, $COMMIT)"
    LABELS=("main" "${VARS[@]}")
    for j in "${!LABELS[@]}"; do
        f="$OUT/bench_v$j.log"
        [ "$j" = 0 ] && f="$OUT/bench_main.log"
        [ -f "$f" ] || continue
        echo "-- ${LABELS[$j]}"
        grep -hE "^\| (cuda|cpu) |^\| (ViT|LLM|Diffusion|per step)" "$f"
    done
    for v in "${ABS[@]}"; do grep -h "^A/B" "$OUT/bench_ab_$v.log"; done
    exit 0
fi

if [ "$MODE" = kernels ]; then
    runlog test_kernels 300 ./build-gpu/tests/test_kernels
    grep -E "FAIL|passed|failed" "$OUT/test_kernels.log" | tail -20
    exit 0
fi
if [ "$MODE" != bench ]; then
    runlog test_kernels 300 ./build-gpu/tests/test_kernels
    runlog parity_tiny 300 ./build-gpu/tests/test_backend_parity
    # checkpoint upload path (BF16 and F32 files -> device arena), appended to the tiny parity log
    for dt in bf16 f32; do
        ./build-gpu/pi0 mkweights --config tiny --seed 7 --dtype $dt -o /tmp/pi0-tiny-$dt.safetensors >/dev/null 2>&1 &&
            { echo "=== parity_ckpt_$dt"; PI0_TEST_CKPT=/tmp/pi0-tiny-$dt.safetensors timeout 120 ./build-gpu/tests/test_backend_parity; \
              echo "=== parity_ckpt_$dt: rc=$?"; } >>"$OUT/parity_tiny.log" 2>&1
    done
    grep -E "parity_ckpt|actions  |passed|FAILED" "$OUT/parity_tiny.log" | tail -8 | tee -a "$LOG"
fi
if [ "$MODE" != tests ]; then
    R=${BENCH_RUNS:-200}
    BENCH="./build-gpu/pi0 bench --backend cuda --horizon 50 --cameras 3 --prompt-len 20 --runs $R"
    runlog bench_main 240 $BENCH
    runlog bench_json 240 $BENCH --json
    runlog bench_reference 240 ./build-gpu/pi0 bench --backend cuda --reference --runs $R
    # per-op breakdown (eager profiled runs only; printed on stderr at session end)
    runlog bench_optime 240 env PI0_CUDA_OPTIME=1 ${OPTIME_ENV:-} ./build-gpu/pi0 bench --backend cuda --horizon 50 --cameras 3 \
        --prompt-len 20 --runs 5 --warmup 2 --stage-runs 20
    if [ -n "${BENCH_ALT_ENV:-}" ]; then # a variant for comparison, e.g. BENCH_ALT_ENV=PI0_CUDA_GEMM_ATTN=1
        runlog bench_alt 240 env $BENCH_ALT_ENV $BENCH
    fi
    cat "$OUT/bench_main.log" "$OUT/bench_json.log" "$OUT/bench_reference.log" >"$OUT/bench.log" 2>/dev/null
    rm -f "$OUT/bench_main.log" "$OUT/bench_json.log" "$OUT/bench_reference.log"
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "device: $DEVICE"
        echo "commit: $COMMIT"
        echo "command: $BENCH   (and --json; and pi0 bench --backend cuda --reference --runs $R)"
        echo
        cat "$OUT/bench.log"
    } >"$OUT/bench_result.txt"
fi
if [ "$MODE" = all ] || [ "$MODE" = tests ]; then
    if [ "${SKIP_FULL:-0}" != 1 ]; then
        left=$(( ${BUDGET_S:-570} - ($(date +%s) - START) ))
        [ $left -gt 60 ] && runlog parity_full $left env PI0_TEST_CONFIG=full PI0_TEST_HORIZON=10 PI0_TEST_CAMS=1 \
            PI0_TEST_QUICK=1 PI0_TEST_TOL=2e-2 ./build-gpu/tests/test_backend_parity
    fi
fi

echo
echo "================ summary ($DEVICE, $COMMIT)"
printf '%s\n' "${STATUS[@]}"
grep -hE "rel_l2|bitwise|mismatch|FAIL" "$OUT"/test_kernels.log 2>/dev/null | grep -vE " ok$" | head -20
for f in "$OUT"/parity_*.log; do
    [ -f "$f" ] && { echo "-- $(basename "$f")"; grep -hE "rel_l2|bitwise|passed|FAILED|prefix length|seed" "$f" | head -30; }
done
grep -hE "^\| (cuda|cpu) |^\| (ViT|LLM|Diffusion|per step)|^pi0 bench" "$OUT"/bench.log 2>/dev/null
[ -f "$OUT/bench_alt.log" ] && { echo "-- alt: $BENCH_ALT_ENV"; grep -hE "^\| (cuda|cpu) |^\| (ViT|LLM|Diffusion|per step)" "$OUT/bench_alt.log"; }
grep -A80 "PI0_CUDA_OPTIME" "$OUT"/bench_optime.log 2>/dev/null | head -60
