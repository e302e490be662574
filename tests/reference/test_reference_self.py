"""Self-checks of the float64 reference (no C code needed): python3 -m pytest tests/reference -q"""
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_obs as mo  # noqa: E402
import pi0_ref as R  # noqa: E402
import safetensors_np as st  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("PI0_SHARED_DIR") or os.path.join(REPO, "..", "shared", "pi0")
TSV = os.path.join(SHARED, "pi0_pytorch_safetensors_tensors.tsv")


@pytest.fixture(scope="module")
def tiny():
    return R.TINY, R.random_weights(R.TINY, seed=0)


def _close(a, b, tol=1e-12):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.linalg.norm(a - b) <= tol * max(np.linalg.norm(b), 1e-300)


# ---------------------------------------------------------------- safetensors
def test_safetensors_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    t = {"f32": rng.standard_normal((3, 4)).astype(np.float32),
         "f16": rng.standard_normal(5).astype(np.float16),
         "i32": np.arange(-3, 3, dtype=np.int32), "i64": np.array([2 ** 40, -1], np.int64),
         "u8": np.array([0, 255, 7], np.uint8), "b": np.array([True, False, True]),
         "scalar": np.float32(1.5), "empty": np.zeros((0, 4), np.float32),
         "bf": st.bf16_round(rng.standard_normal((2, 3)))}
    p = str(tmp_path / "x.safetensors")
    st.save(p, t, metadata={"pi0.llm_depth": 3, "format": "pt"}, dtypes={"bf": "BF16"})
    for lazy in (False, True):
        got, meta = st.load(p, lazy=lazy)
        assert meta == {"pi0.llm_depth": "3", "format": "pt"}
        assert sorted(got) == sorted(t)
        for k, v in t.items():
            assert got[k].dtype == np.asarray(v).dtype and got[k].shape == np.shape(v), k
            np.testing.assert_array_equal(got[k], v)
    with open(p, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        assert n % 8 == 0 and b'"dtype":"BF16"' in f.read(n)
    lz, _ = st.load(p, lazy=True)
    assert "f32" in lz and "nope" not in lz and lz.shape("empty") == (0, 4)
    np.testing.assert_array_equal(lz.rows("f32", [2, 0]), t["f32"][[2, 0]])


def test_bf16_rounding():
    x = np.array([1.0, 1.00390625, 1.005859375, -2.5, 3.0e38, np.inf], np.float32)
    # 1 + 2^-8 is a tie -> even (1.0); 1 + 1.5*2^-8 rounds up to 1 + 2^-7
    np.testing.assert_array_equal(st.bf16_round(x)[:4], [1.0, 1.0, 1.0078125, -2.5])
    assert np.isinf(st.bf16_round(x)[5]) and np.isnan(st.bf16_round(np.float32(np.nan)))


# ---------------------------------------------------------------- config and tensor table
def test_load_config_fallback():
    cfg = R.load_config({"pi0.llm_depth": "2", "format": "pt"})
    assert cfg["llm_depth"] == 2 and cfg["vit_width"] == 1152 and cfg == {**R.FULL, "llm_depth": 2}
    assert R.load_config(R.config_metadata(R.TINY)) == R.TINY
    assert R.load_config({}) == R.FULL


def test_full_tensor_table_matches_tsv():
    if not os.path.exists(TSV):
        pytest.skip(f"tsv not found: {TSV}")
    rows = []
    with open(TSV) as f:
        for line in f:
            if line.startswith("#") or line.startswith("name\t") or not line.strip():
                continue
            name, _dtype, shape = line.rstrip("\n").split("\t")[:3]
            rows.append((name, tuple(int(s) for s in shape.strip("[]").split(","))))
    mine = R.tensor_table(R.FULL)
    assert len(rows) == 777
    assert mine == rows
    assert sum(int(np.prod(s)) for _, s in mine) == 3501372176


# ---------------------------------------------------------------- math pieces
def test_time_schedule_matches_spec_table():
    want = ["3f800000", "3f666666", "3f4ccccc", "3f333332", "3f199998",
            "3efffffd", "3eccccca", "3e999997", "3e4cccc8", "3dccccc3"]
    ts, dt = R.time_schedule(10)
    assert [format(int(np.float32(t).view(np.uint32)), "08x") for t in ts] == want
    assert float(dt) == -0.10000000149011612
    assert float(np.float32(ts[-1] + dt)) == pytest.approx(-7.45e-08, rel=1e-2)
    for n in (1, 2, 3, 5, 7, 20, 50, 100):
        assert len(R.time_schedule(n)[0]) == n


def test_rope_matches_complex_rotation():
    rng = np.random.default_rng(1)
    u = rng.standard_normal((5, 3, 16))
    pos = np.array([0, 1, 7, 100, 531])
    z = u[..., :8] + 1j * u[..., 8:]
    theta = pos[:, None, None] * 10000.0 ** (-np.arange(8) / 8.0)
    zr = z * np.exp(1j * theta)
    _close(R.rope(u, pos), np.concatenate([zr.real, zr.imag], -1), 1e-14)
    _close(R.rope(u, np.zeros(5)), u, 0)


def test_time_embedding_layout():
    e = R.time_embedding(1.0, 32)
    period = 4e-3 * 1000.0 ** (np.arange(16) / 15.0)
    _close(e, np.concatenate([np.sin(2 * np.pi / period), np.cos(2 * np.pi / period)]), 1e-12)


def test_gqa_attention_against_loops():
    rng = np.random.default_rng(2)
    T, S, nh, nkv, hd = 4, 6, 6, 2, 5
    q, k, v = rng.standard_normal((T, nh, hd)), rng.standard_normal((S, nkv, hd)), rng.standard_normal((S, nkv, hd))
    mask = rng.random((T, S)) < 0.7
    mask[:, 0] = True
    got = R.gqa_attention(q, k, v, mask)
    ref = np.zeros((T, nh, hd))
    for n in range(nh):
        kv = n // (nh // nkv)
        for t in range(T):
            s = np.array([q[t, n] @ k[j, kv] if mask[t, j] else -np.inf for j in range(S)])
            p = np.exp(s - s.max())
            ref[t, n] = (p / p.sum()) @ v[:, kv]
    _close(got, ref.reshape(T, -1), 1e-13)


# ---------------------------------------------------------------- end to end (tiny)
def test_tiny_end_to_end(tiny):
    cfg, w = tiny
    obs = mo.make_obs(None, 1, cfg, cams=(1, 0, 1), n_tokens=13, horizon=7)
    out = R.run(w, cfg, obs)
    P = 2 * 256 + 13
    names = {"img_emb.0", "img_emb.2", "prefix_len", "velocity.0", "actions"}
    names |= {f"{kv}.{l}" for kv in "kv" for l in range(cfg["llm_depth"])}
    assert set(out) == names
    assert out["prefix_len"].tolist() == [P]
    assert out["img_emb.0"].shape == (256, cfg["llm_width"])
    assert out["k.1"].shape == (P, cfg["num_kv_heads"] * cfg["head_dim"])
    assert out["actions"].shape == (7, 32) and out["velocity.0"].shape == (7, 32)
    for k, v in out.items():
        assert np.all(np.isfinite(v)), k
        assert v.dtype == (np.int32 if k == "prefix_len" else np.float64), k
    assert np.std(out["actions"]) > 0.1
    # the first velocity is taken at x = noise, t = 1: one Euler step of size -1 from the noise
    one = R.run(w, cfg, obs, num_steps=1)
    _close(one["actions"], obs["noise"].astype(np.float64) - 1.0 * one["velocity.0"], 1e-15)
    _close(one["velocity.0"], out["velocity.0"], 1e-15)


def test_compaction_invariance(tiny):
    cfg, w = tiny
    base = mo.make_obs(None, 3, cfg, cams=(1, 1, 0), n_tokens=20, max_len=48, horizon=50)
    ref = R.run(w, cfg, base)
    rng = np.random.default_rng(99)
    # (a) no padding at all, different garbage in the masked camera
    b = dict(base, tokens=base["tokens"][:20], token_mask=base["token_mask"][:20],
             images=base["images"].copy())
    b["images"][2] = rng.uniform(-1, 1, b["images"][2].shape)
    # (b) padding tokens interleaved with the real ones (mask 0 in the middle) + other pad ids
    ids = list(base["tokens"][:20])
    toks, msk = [], []
    for i, t in enumerate(ids):
        toks.append(t)
        msk.append(1)
        if i % 4 == 1:
            toks.append(rng.integers(0, cfg["vocab_size"]))
            msk.append(0)
    c = dict(base, tokens=np.array(toks, np.int32), token_mask=np.array(msk, np.uint8))
    for o in (b, c):
        got = R.run(w, cfg, o)
        assert set(got) == set(ref)
        for k in ref:
            _close(got[k], ref[k], 1e-12)


def test_compact_equals_padded_layout(tiny):
    """SPEC 4.5: dropping invalid prefix tokens == openpi's masked padded layout."""
    cfg, w = tiny
    for cams, n in (((1, 1, 0), 20), ((0, 1, 1), 5), ((1, 1, 1), 48)):
        obs = mo.make_obs(None, 4, cfg, cams=cams, n_tokens=n, horizon=10)
        a, b = R.run(w, cfg, obs), R.run(w, cfg, obs, compact=False)
        assert set(a) == set(b)
        for k in a:
            _close(a[k], b[k], 1e-12)


def test_gqa_grouping_matches_duplicated_kv_heads():
    """nkv=2 with nh=4 must equal nkv=4 with kv heads duplicated as [0,0,1,1] (n // group)."""
    cfg2 = dict(R.TINY, num_heads=4, num_kv_heads=2, llm_depth=2)
    cfg4 = dict(cfg2, num_kv_heads=4)
    w2 = R.random_weights(cfg2, seed=5)
    w4 = dict(w2)
    hd = cfg2["head_dim"]
    for name, a in w2.items():
        if name.endswith("k_proj.weight") or name.endswith("v_proj.weight"):
            if "vision_model" not in name:
                heads = a.reshape(2, hd, -1)
                w4[name] = np.concatenate([heads[0], heads[0], heads[1], heads[1]])
    obs = mo.make_obs(None, 6, cfg2, horizon=5)
    a, b = R.run(w2, cfg2, obs, num_steps=3), R.run(w4, cfg4, obs, num_steps=3)
    _close(a["actions"], b["actions"], 1e-12)
    _close(a["k.0"], b["k.0"].reshape(-1, 4, hd)[:, ::2].reshape(-1, 2 * hd), 1e-14)
    c = R.run(w2, cfg2, obs, num_steps=3, compact=False)
    _close(a["actions"], c["actions"], 1e-12)


def test_cli_file_roundtrip(tiny, tmp_path):
    """bf16 checkpoint on disk (embedding under the alias name) -> CLI dump == in-memory run."""
    cfg, w = tiny
    model, obsf, dump = (str(tmp_path / n) for n in ("m.safetensors", "o.safetensors", "d.safetensors"))
    wf = {(R.EMB_ALT if k == R.EMB else k): v for k, v in w.items()}
    st.save(model, wf, metadata=R.config_metadata(cfg), dtypes={k: "BF16" for k in wf})
    obs = mo.make_obs(obsf, 7, cfg, cams=(1, 1, 0), n_tokens=9, horizon=6)
    subprocess.run([sys.executable, os.path.join(HERE, "pi0_ref.py"), "--model", model,
                    "--obs", obsf, "--out", dump, "--num-steps", "4"], check=True)
    got, _ = st.load(dump)
    ref = R.run(w, cfg, obs, num_steps=4)
    assert set(got) == set(ref)
    assert got["prefix_len"].dtype == np.int32 and got["prefix_len"].tolist() == [2 * 256 + 9]
    for k in ref:
        if k != "prefix_len":
            assert got[k].dtype == np.float32
            _close(got[k], ref[k], 1e-7)
    # make_obs CLI writes the same file as the function
    obs2 = str(tmp_path / "o2.safetensors")
    subprocess.run([sys.executable, os.path.join(HERE, "make_obs.py"), "--out", obs2, "--seed", "7",
                    "--config", "tiny", "--n-tokens", "9", "--horizon", "6"], check=True)
    with open(obsf, "rb") as f1, open(obs2, "rb") as f2:
        assert f1.read() == f2.read()
