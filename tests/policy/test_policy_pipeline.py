"""Raw observation -> actions through the C policy layer (`pi0_policy_tool infer`, the code of
`pi0 policy-infer`) on a tiny checkpoint, for every shipped config, checked step by step against
the NumPy/Pillow/sentencepiece reference of openpi's transforms (policy_ref):
  1. the model-boundary inputs the policy builds (--dump-inputs) vs policy_ref.prepare;
  2. the engine alone on those inputs (`pi0 infer`) -> normalized actions -> policy_ref.outputs
     (unnormalize, delta -> absolute, adapter) vs the policy's float64 actions."""
import json
import os

import numpy as np
import pytest
import sentencepiece as spm

import policy_cases as pc
import policy_ref
import safetensors_np as st
from conftest import run


@pytest.fixture(scope="module")
def tiny_ckpt(pi0_cli, tmp_path_factory, base_seed):
    p = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    run(pi0_cli, "mkweights", "--config", "tiny", "--seed", base_seed, "-o", p)
    return str(p)


def _run_case(name, tool, pi0_cli, tiny_ckpt, spm_model, tmp_path, seed, extra_args=(), config=None):
    cfg_file, adapter, make_obs, n_state, n_act, delta = pc.CASES[name]
    rng = np.random.default_rng(seed)
    stats = pc.norm_stats(rng, n_state, n_act)
    ns_path = pc.write_json(tmp_path / "norm_stats.json", stats)
    obs = make_obs(rng)
    pc.save_raw_obs(tmp_path / "obs.safetensors", obs)
    H = pc.HORIZONS.get(name, 50)
    noise = rng.standard_normal((H, 32)).astype(np.float32)
    st.save(str(tmp_path / "noise.safetensors"), {"noise": noise})
    config = config or os.path.join(pc.CONFIGS, cfg_file)
    run(tool, "infer", "-m", tiny_ckpt, "--policy-config", config, "--raw-obs", tmp_path / "obs.safetensors",
        "--tokenizer", spm_model, "--norm-stats", ns_path, "--noise", tmp_path / "noise.safetensors",
        "--backend", "cpu", "-o", tmp_path / "actions.safetensors", "--dump-inputs", tmp_path / "inputs.safetensors",
        *extra_args)
    actions = st.load(str(tmp_path / "actions.safetensors"))[0]["actions"]
    inputs = st.load(str(tmp_path / "inputs.safetensors"))[0]
    return obs, stats, noise, actions, inputs, adapter, delta


@pytest.mark.parametrize("name", list(pc.CASES))
def test_policy_pipeline(name, tool, pi0_cli, tiny_ckpt, spm_model, tmp_path, base_seed):
    obs, stats, noise, actions, inputs, adapter, delta = _run_case(name, tool, pi0_cli, tiny_ckpt, spm_model, tmp_path,
                                                                   base_seed)
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    ref = policy_ref.prepare(pc.flatten(obs), adapter, stats["norm_stats"], sp, pc.DEFAULT_PROMPTS.get(name))
    exact_images = sum(np.array_equal(inputs["images"][k], ref["images"][k]) for k in range(3))
    assert exact_images == 3, [float(np.abs(inputs["images"][k] - ref["images"][k]).max()) for k in range(3)]
    assert np.array_equal(inputs["image_masks"], ref["image_masks"])
    assert np.array_equal(inputs["tokens"], ref["tokens"]) and np.array_equal(inputs["token_mask"], ref["token_mask"])
    state_ulps = int(np.abs(inputs["state"].view(np.int32) - ref["state"].view(np.int32)).max())
    assert state_ulps <= 1, (inputs["state"], ref["state"])
    assert np.array_equal(inputs["noise"], noise)

    # the engine alone, then the reference output transforms
    run(pi0_cli, "infer", "-m", tiny_ckpt, "--obs", tmp_path / "inputs.safetensors", "-o", tmp_path / "norm.safetensors",
        "--backend", "cpu")
    norm = st.load(str(tmp_path / "norm.safetensors"))[0]["actions"]
    expect = policy_ref.outputs(norm, inputs["state"], adapter, stats["norm_stats"], delta)
    assert actions.dtype == np.float64 and actions.shape == expect.shape
    err = float(np.abs(actions - expect).max())
    exact = int((actions == expect).sum())
    print(f"\n[policy pipeline {name}] images 3/3 bit-exact, tokens equal, state within {state_ulps} ulp; "
          f"actions {actions.shape}: {exact}/{actions.size} bit-equal to the reference, max abs diff {err:.3g}")
    assert err <= 1e-12 * max(1.0, float(np.abs(expect).max()))


def test_policy_generic_quantile(tool, pi0_cli, tiny_ckpt, spm_model, tmp_path, base_seed):
    """A generic config with every option: custom keys, 3 cameras HWC (one optional and absent),
    two state keys, quantile normalization, delta mask, 5 action dims, relative paths."""
    rng = np.random.default_rng(base_seed + 5)
    stats = pc.norm_stats(rng, 6, 5)
    pc.write_json(tmp_path / "stats.json", stats)
    cfg = {"adapter": "generic", "images": {"base_0_rgb": "cams/top", "left_wrist_0_rgb": "cams/wrist",
                                             "right_wrist_0_rgb": "cams/other"},
           "required_images": ["base_0_rgb", "left_wrist_0_rgb"], "image_layout": "HWC",
           "state_keys": ["robot/q", "robot/grip"], "prompt_key": "task", "normalization": "quantile",
           "delta_action_mask": [True, False, True], "action_dims": 5, "action_horizon": 8, "num_steps": 3,
           "norm_stats": "stats.json", "metadata": {"robot": "test", "hz": 15.0}}
    config = pc.write_json(tmp_path / "generic.json", cfg)
    obs = {"cams": {"top": rng.integers(0, 256, (100, 150, 3), dtype=np.uint8),
                    "wrist": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)},
           "robot": {"q": rng.uniform(-1, 1, 5), "grip": np.array([0.3], np.float32)},
           "task": "stack_the_blocks"}
    pc.save_raw_obs(tmp_path / "obs.safetensors", obs)
    noise = rng.standard_normal((8, 32)).astype(np.float32)
    st.save(str(tmp_path / "noise.safetensors"), {"noise": noise})
    run(tool, "infer", "-m", tiny_ckpt, "--policy-config", config, "--raw-obs", tmp_path / "obs.safetensors",
        "--tokenizer", spm_model, "--noise", tmp_path / "noise.safetensors", "--backend", "cpu",
        "-o", tmp_path / "actions.safetensors", "--dump-inputs", tmp_path / "inputs.safetensors")
    actions = st.load(str(tmp_path / "actions.safetensors"))[0]["actions"]
    inputs = st.load(str(tmp_path / "inputs.safetensors"))[0]
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    ns = stats["norm_stats"]
    state = np.concatenate([obs["robot"]["q"], obs["robot"]["grip"].astype(np.float64)])
    ref_state = np.pad(policy_ref.normalize(state, ns["state"], quantile=True), (0, 26)).astype(np.float32)
    assert int(np.abs(inputs["state"].view(np.int32) - ref_state.view(np.int32)).max()) <= 1
    assert np.array_equal(inputs["image_masks"], [1, 1, 0])
    assert np.array_equal(inputs["images"][0], policy_ref.to_unit(policy_ref.resize_with_pad(obs["cams"]["top"])))
    tokens, mask, _ = policy_ref.tokenize(sp, "stack_the_blocks")
    assert np.array_equal(inputs["tokens"], tokens) and np.array_equal(inputs["token_mask"], mask)
    run(pi0_cli, "infer", "-m", tiny_ckpt, "--obs", tmp_path / "inputs.safetensors", "-o", tmp_path / "norm.safetensors",
        "--backend", "cpu", "--steps", 3)
    norm = st.load(str(tmp_path / "norm.safetensors"))[0]["actions"]
    a = policy_ref.unnormalize(norm.astype(np.float64), ns["actions"], quantile=True)
    s = policy_ref.unnormalize(inputs["state"].astype(np.float64), ns["state"], quantile=True)
    a[:, [0, 2]] += s[[0, 2]]
    expect = a[:, :5]
    err = float(np.abs(actions - expect).max())
    print(f"\n[policy pipeline generic/quantile] actions {actions.shape}, max abs diff {err:.3g}")
    assert actions.shape == (8, 5) and err <= 1e-12 * max(1.0, float(np.abs(expect).max()))
