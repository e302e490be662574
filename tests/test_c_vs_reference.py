"""C CPU backend vs the independent float64 NumPy reference, tiny config.

Every stage the dump holds (per-camera image embeddings, prefix K/V of every layer, first
velocity, actions) must agree to relative L2 <= 1e-4. Weights and inputs are fresh per run.
"""
import os

import numpy as np
import pytest

import make_obs
import pi0_ref
import safetensors_np as st
from pi0_testutil import run_cli

TOL = 1e-4

CASES = [  # (cameras, valid tokens, horizon, padded prompt, checkpoint dtype)
    ((1, 0, 0), 20, 50, True, "bf16"),
    ((1, 1, 0), 20, 50, True, "bf16"),
    ((1, 1, 1), 48, 10, True, "bf16"),
    ((0, 1, 1), 7, 10, False, "bf16"),
    ((1, 0, 1), 1, 50, False, "f32"),
    ((1, 1, 1), 0, 10, True, "f32"),
]


def rel_l2(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_stages_and_actions_match_reference(cli, base_seed, tmp_path, case):
    cams, n_tok, horizon, pad, dtype = CASES[case]
    seed = base_seed + 1000 * case
    model = tmp_path / "tiny.safetensors"
    obs = tmp_path / "obs.safetensors"
    run_cli(cli, "mkweights", "--config", "tiny", "--seed", seed, "--dtype", dtype, "-o", model)
    weights, meta = st.load(str(model))
    cfg = pi0_ref.load_config(meta)
    o = make_obs.make_obs(str(obs), seed + 1, cfg, cams, n_tok, 48, horizon, pad)
    run_cli(cli, "infer", "-m", model, "--obs", obs, "-o", tmp_path / "act.safetensors", "--dump",
            tmp_path / "dump.safetensors", "--backend", "cpu")
    got, _ = st.load(str(tmp_path / "dump.safetensors"))
    ref = pi0_ref.run(weights, cfg, o)
    assert set(got) == set(ref), f"dump names differ: {sorted(set(got) ^ set(ref))}"
    assert int(got["prefix_len"][0]) == int(ref["prefix_len"][0])
    errs = {k: rel_l2(got[k], ref[k]) for k in ref if k != "prefix_len"}
    worst = max(errs, key=errs.get)
    print(f"case {case} cams={cams} tokens={n_tok} H={horizon}: worst {worst} = {errs[worst]:.2e}")
    for k, e in errs.items():
        assert np.all(np.isfinite(got[k])), k
        assert e <= TOL, f"{k}: rel L2 {e:.3e} > {TOL}"
    acts, _ = st.load(str(tmp_path / "act.safetensors"))
    assert np.array_equal(acts["actions"], got["actions"])


def test_mkweights_full_list_matches_tsv(cli):
    """`pi0 mkweights --config full --list` = the openpi tensor table, name for name, shape for shape."""
    shared = os.environ.get("PI0_SHARED_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "pi0")
    tsv = os.path.join(shared, "pi0_pytorch_safetensors_tensors.tsv")
    rows = []
    with open(tsv) as f:
        for line in f:
            if line.startswith("#") or line.startswith("name\t") or not line.strip():
                continue
            name, dtype, shape = line.rstrip("\n").split("\t")[:3]
            rows.append((name, dtype, shape.replace(" ", "")))
    out = run_cli(cli, "mkweights", "--config", "full", "--list").stdout.splitlines()
    got = []
    for line in out:
        name, dtype, shape = line.split(" ", 2)
        got.append((name, dtype, shape.replace(" ", "")))
    assert len(got) == len(rows) == 777
    assert got == rows


def test_mkweights_is_deterministic_and_seeded(cli, base_seed, tmp_path):
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    run_cli(cli, "mkweights", "--config", "tiny", "--seed", base_seed, "-o", a)
    run_cli(cli, "mkweights", "--config", "tiny", "--seed", base_seed, "-o", b)
    run_cli(cli, "mkweights", "--config", "tiny", "--seed", base_seed + 1, "-o", c)
    assert a.read_bytes() == b.read_bytes()
    wa, _ = st.load(str(a))
    wc, _ = st.load(str(c))
    for name, t in wa.items():
        assert np.count_nonzero(t) == t.size or name.endswith("lm_head.weight"), f"{name} has zeros"
        assert not np.array_equal(t, wc[name]), f"{name} does not depend on the seed"


def test_every_weight_changes_the_actions(cli, base_seed, tmp_path):
    """Perturbing any one used tensor (one of each kind) changes the actions: nothing is ignored."""
    model = tmp_path / "tiny.safetensors"
    obs = tmp_path / "obs.safetensors"
    run_cli(cli, "mkweights", "--config", "tiny", "--seed", base_seed, "-o", model)
    weights, meta = st.load(str(model))
    cfg = pi0_ref.load_config(meta)
    make_obs.make_obs(str(obs), base_seed, cfg, (1, 1, 0), 10, 48, 10, True)
    run_cli(cli, "infer", "-m", model, "--obs", obs, "-o", tmp_path / "a0.safetensors", "--backend", "cpu")
    base = st.load(str(tmp_path / "a0.safetensors"))[0]["actions"]
    last = f"language_model.layers.{cfg['llm_depth'] - 1}."
    # SPEC 5.4: the prefill's dead tail (only the last layer's K/V are read, not its queries)
    dead = ("self_attn.q_proj", "self_attn.o_proj", "mlp.", "post_attention_layernorm")
    names = [n for n in weights if "lm_head" not in n and "language_model.norm" not in n
             and not (last in n and any(d in n for d in dead))]
    rng = np.random.default_rng(base_seed)
    for name in rng.choice(names, size=16, replace=False):
        w2 = dict(weights)
        w2[name] = weights[name] + np.float32(0.05) * rng.standard_normal(weights[name].shape).astype(np.float32)
        p = tmp_path / "pert.safetensors"
        st.save(str(p), w2, meta)
        run_cli(cli, "infer", "-m", p, "--obs", obs, "-o", tmp_path / "a1.safetensors", "--backend", "cpu")
        a1 = st.load(str(tmp_path / "a1.safetensors"))[0]["actions"]
        assert not np.array_equal(a1, base), f"perturbing {name} did not change the actions"
