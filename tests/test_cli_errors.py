"""The CLI names the problem in a bad observation file and exits non-zero, never crashes."""
import numpy as np
import pytest

import make_obs
import pi0_ref
import safetensors_np as st
from pi0_testutil import run_cli


@pytest.fixture(scope="module")
def tiny_model(cli, tmp_path_factory, base_seed):
    p = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    run_cli(cli, "mkweights", "--config", "tiny", "--seed", base_seed, "-o", p)
    return p


def _infer_error(cli, model, obs_path, tmp_path):
    r = run_cli(cli, "infer", "-m", model, "--obs", obs_path, "-o", tmp_path / "a.safetensors", "--backend", "cpu",
                check=False)
    assert r.returncode == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize("mutate,message", [
    (lambda o: o.pop("state"), "missing tensor state"),
    (lambda o: o.__setitem__("images", o["images"][:2]), "tensor images has shape [2, 224, 224, 3]"),
    (lambda o: o.__setitem__("token_mask", o["token_mask"][:5]), "tensor token_mask has shape [5]"),
    (lambda o: o.__setitem__("noise", o["noise"][:, :7]), "tensor noise has shape [50, 7]"),
    (lambda o: o["images"].__setitem__((0, 3, 4, 1), np.nan), "image 0 (base_0_rgb) has a non-finite value"),
    (lambda o: o["state"].__setitem__(2, np.inf), "state has a non-finite value (inf) at index 2"),
    (lambda o: o.__setitem__("image_masks", np.zeros(3, np.uint8)), "no valid camera"),
    (lambda o: (o.__setitem__("tokens", np.ones(49, np.int32)), o.__setitem__("token_mask", np.ones(49, np.uint8))),
     "prompt has 49 tokens, more than max_token_len 48"),
    (lambda o: o["tokens"].__setitem__(0, 5000), "token 5000 at position 0 is outside the vocabulary"),
])
def test_bad_observation(cli, tiny_model, tmp_path, base_seed, mutate, message):
    cfg = pi0_ref.CONFIGS["tiny"]
    o = make_obs.make_obs(None, base_seed, cfg)
    mutate(o)
    p = tmp_path / "obs.safetensors"
    st.save(str(p), o)
    assert message in _infer_error(cli, tiny_model, p, tmp_path)


def test_truncated_observation_file(cli, tiny_model, tmp_path, base_seed):
    p = tmp_path / "obs.safetensors"
    make_obs.make_obs(str(p), base_seed, pi0_ref.CONFIGS["tiny"])
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert "points past the end of the data" in _infer_error(cli, tiny_model, p, tmp_path)


def test_missing_model_file(cli, tmp_path):
    r = run_cli(cli, "infer", "-m", tmp_path / "nope.safetensors", "--obs", tmp_path / "o", "-o", tmp_path / "a",
                check=False)
    assert r.returncode == 1 and "cannot open" in r.stderr
