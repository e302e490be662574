"""The Python package (python/pi0, ctypes over libpi0.so): Policy(checkpoint, config).infer(obs)
on a tiny checkpoint gives exactly the C CLI's actions for the same raw observation and noise;
nested dicts, metadata, prepare(), seeds, errors. Skipped on sanitized builds."""
import os
import subprocess
import sys

import numpy as np
import pytest

import policy_cases as pc
import safetensors_np as st
from conftest import ROOT, run


@pytest.fixture(scope="module")
def tiny_ckpt(pi0_cli, tmp_path_factory, base_seed):
    p = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    run(pi0_cli, "mkweights", "--config", "tiny", "--seed", base_seed, "-o", p)
    return str(p)


@pytest.fixture(scope="module")
def pi0mod(libpi0):
    import pi0
    pi0.load_library(libpi0)
    return pi0


@pytest.mark.parametrize("name", list(pc.CASES))
def test_python_matches_cli(name, pi0mod, tool, tiny_ckpt, spm_model, tmp_path, base_seed):
    cfg_file, adapter, make_obs, n_state, n_act, delta = pc.CASES[name]
    rng = np.random.default_rng(base_seed + 11)
    ns = pc.write_json(tmp_path / "ns.json", pc.norm_stats(rng, n_state, n_act))
    obs = make_obs(rng)
    H = pc.HORIZONS.get(name, 50)
    noise = rng.standard_normal((H, 32)).astype(np.float32)
    pc.save_raw_obs(tmp_path / "obs.safetensors", obs)
    st.save(str(tmp_path / "noise.safetensors"), {"noise": noise})
    config = os.path.join(pc.CONFIGS, cfg_file)
    run(tool, "infer", "-m", tiny_ckpt, "--policy-config", config, "--raw-obs", tmp_path / "obs.safetensors",
        "--tokenizer", spm_model, "--norm-stats", ns, "--noise", tmp_path / "noise.safetensors", "--backend", "cpu",
        "-o", tmp_path / "a.safetensors", "--dump-inputs", tmp_path / "in.safetensors")
    cli_actions = st.load(str(tmp_path / "a.safetensors"))[0]["actions"]
    cli_inputs = st.load(str(tmp_path / "in.safetensors"))[0]

    with pi0mod.Policy(tiny_ckpt, config, tokenizer=spm_model, norm_stats=ns, backend="cpu") as policy:
        out = policy.infer(obs, noise=noise)
        assert set(out) == {"actions", "policy_timing"} and set(out["policy_timing"]) == {"infer_ms"}
        assert out["actions"].dtype == np.float64 and out["actions"].shape == cli_actions.shape
        equal = int((out["actions"] == cli_actions).sum())
        print(f"\n[python vs CLI {name}] actions {cli_actions.shape}: {equal}/{cli_actions.size} bit-equal")
        assert equal == cli_actions.size
        prep = policy.prepare(obs)
        for k in ("images", "image_masks", "tokens", "token_mask", "state"):
            assert np.array_equal(prep[k], cli_inputs[k]), k
        # flat keys work the same
        assert np.array_equal(policy.infer(pc.flatten(obs), noise=noise)["actions"], cli_actions)
        expect_meta = {"reset_pose": [0, -1.5, 1.5, 0, 0, 0]} if name == "aloha" else {}
        assert policy.metadata == expect_meta


def test_python_seeds_and_errors(pi0mod, tiny_ckpt, spm_model, tmp_path, base_seed):
    rng = np.random.default_rng(base_seed + 3)
    ns = pc.write_json(tmp_path / "ns.json", pc.norm_stats(rng, 14, 14))
    config = os.path.join(pc.CONFIGS, "aloha.json")
    policy = pi0mod.Policy(tiny_ckpt, config, tokenizer=spm_model, norm_stats=ns, backend="cpu", num_steps=2, seed=5)
    obs = pc.aloha_obs(rng)
    a = policy.infer(obs, seed=9)["actions"]
    assert np.array_equal(a, policy.infer(obs, seed=9)["actions"])
    assert not np.array_equal(a, policy.infer(obs, seed=10)["actions"])
    first, second = policy.infer(obs)["actions"], policy.infer(obs)["actions"]
    assert not np.array_equal(first, second)  # a fresh seed per call, as openpi's rng

    def err(o, msg, **kw):
        with pytest.raises(pi0mod.Pi0Error) as e:
            policy.infer(o, **kw)
        assert msg in str(e.value), str(e.value)
        return e.value

    e = err({**obs, "images": {**obs["images"], "cam_front": obs["images"]["cam_high"]}},
            "unknown camera 'cam_front' (key 'images/cam_front')")
    assert e.status == "PI0_ERR_INVALID_ARG"
    err({**obs, "images": {"cam_high": obs["images"]["cam_high"].astype(np.int16)}},
        "image 'images/cam_high': expected a uint8 (or float in [0, 1]) array of shape [3, H, W] (CHW), got int64")
    err({**obs, "images": {"cam_high": obs["images"]["cam_high"][0]}}, "got uint8 [120, 160]")
    err({**obs, "state": np.where(np.arange(14) == 4, np.nan, obs["state"])},
        "state 'state' has a non-finite value (nan) at index 4")
    err({k: v for k, v in obs.items() if k != "prompt"}, "missing key 'prompt': a prompt is required")
    err({k: v for k, v in obs.items() if k != "state"}, "missing key 'state'")
    with pytest.raises(ValueError, match=r"noise must have shape \(50, 32\)"):
        policy.infer(obs, noise=np.zeros((10, 32)))
    policy.close()

    with pytest.raises(pi0mod.Pi0Error, match="cannot open policy config"):
        pi0mod.Policy(tiny_ckpt, str(tmp_path / "nope.json"), tokenizer=spm_model)
    with pytest.raises(pi0mod.Pi0Error, match="cannot open"):
        pi0mod.Policy(str(tmp_path / "nope.safetensors"), config, tokenizer=spm_model, norm_stats=ns)
    # default prompt from the caller (openpi's --default-prompt)
    with pi0mod.Policy(None, config, random_config="tiny", tokenizer=spm_model, norm_stats=ns, backend="cpu",
                       num_steps=1, default_prompt="fold the towel") as p2:
        out = p2.infer({k: v for k, v in obs.items() if k != "prompt"})
        assert out["actions"].shape == (50, 14)


def test_python_package_builds(tmp_path):
    """`pip install ./python` works: build the wheel offline with the installed setuptools."""
    pytest.importorskip("setuptools")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), os.path.join(ROOT, "python")], capture_output=True, text=True)
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip not available")
    assert r.returncode == 0, r.stderr
    wheels = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    assert wheels and wheels[0].startswith("pi0-0.1.0")
