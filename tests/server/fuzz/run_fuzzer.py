"""Run one libFuzzer target for a bounded time and print its executions and findings.

usage: run_fuzzer.py FUZZER WORKDIR SECONDS [SEED_DIR] [DICT]
The corpus grows in WORKDIR/corpus (seeded from SEED_DIR); crashes go to WORKDIR/artifacts.
Exit 0 when the fuzzer found nothing, 1 otherwise."""
import glob
import os
import re
import shutil
import subprocess
import sys


def main():
    fuzzer, work, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seeds = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    dictionary = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    name = os.path.basename(fuzzer)
    corpus, artifacts = os.path.join(work, "corpus"), os.path.join(work, "artifacts")
    os.makedirs(corpus, exist_ok=True)
    shutil.rmtree(artifacts, ignore_errors=True)
    os.makedirs(artifacts)
    cmd = [fuzzer, corpus] + ([seeds] if seeds else []) + [
        f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048", "-malloc_limit_mb=1024",
        "-max_len=65536", "-print_final_stats=1", f"-artifact_prefix={artifacts}/"]
    if dictionary:
        cmd.append(f"-dict={dictionary}")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
    log = r.stderr
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    execs = int(execs[-1]) if execs else 0
    cov = re.findall(r"cov: (\d+)", log)
    found = sorted(glob.glob(os.path.join(artifacts, "*")))
    n_corpus = len(os.listdir(corpus))
    line = (f"[fuzz] {name}: {execs} executions in {seconds} s, coverage {cov[-1] if cov else '?'} edges, "
            f"corpus {n_corpus} inputs, findings {len(found)} (exit {r.returncode})")
    print(line)
    if os.environ.get("PI0_SERVER_REPORT"):  # ctest hides passing tests' output; CI prints this file
        with open(os.environ["PI0_SERVER_REPORT"], "a") as f:
            f.write(line + "\n")
    if found or r.returncode != 0:
        print(log[-6000:])
        for f in found:
            print(f"finding: {f} ({os.path.getsize(f)} bytes)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
