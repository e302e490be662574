#!/usr/bin/env python3
"""Random observation files (docs/FORMATS.md "Observation") for tests.

CLI: python3 tests/reference/make_obs.py --out O.safetensors [--seed 0] [--config tiny|full |
     --model M.safetensors] [--cams 1,1,0] [--n-tokens 20] [--max-len 48] [--horizon 50] [--no-pad]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pi0_ref  # noqa: E402
import safetensors_np as st  # noqa: E402


def make_obs(path, seed, cfg, cams=(1, 1, 0), n_tokens=20, max_len=48, horizon=50, pad=True):
    """Write (if path) and return a random observation dict.
    Every image slot gets uniform [-1,1] pixels (masked slots too: they must be ignored);
    tokens uniform in [0, vocab); token_mask = n_tokens ones then zeros (length max_len) when pad,
    else n_tokens ones; state and noise N(0,1). Arrays are float32/int32/uint8 as in the file."""
    rng = np.random.default_rng(seed)
    S, A = cfg["image_size"], cfg["action_dim"]
    L = max_len if pad else n_tokens
    assert n_tokens <= L
    obs = {
        "images": rng.uniform(-1.0, 1.0, (pi0_ref.NUM_CAMERAS, S, S, 3)).astype(np.float32),
        "image_masks": np.asarray(cams, dtype=np.uint8),
        "tokens": rng.integers(0, cfg["vocab_size"], L).astype(np.int32),
        "token_mask": (np.arange(L) < n_tokens).astype(np.uint8),
        "state": rng.standard_normal(A).astype(np.float32),
        "noise": rng.standard_normal((horizon, A)).astype(np.float32),
    }
    if path:
        st.save(path, obs)
    return obs


def main(argv=None):
    ap = argparse.ArgumentParser(description="write a random pi0 observation file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="tiny", choices=sorted(pi0_ref.CONFIGS))
    ap.add_argument("--model", help="take the config from this checkpoint's metadata instead")
    ap.add_argument("--cams", default="1,1,0")
    ap.add_argument("--n-tokens", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=48)
    ap.add_argument("--horizon", type=int, default=50)
    ap.add_argument("--no-pad", action="store_true")
    a = ap.parse_args(argv)
    if a.model:
        cfg = pi0_ref.load_config(st.load(a.model, lazy=True)[1])
    else:
        cfg = pi0_ref.CONFIGS[a.config]
    cams = tuple(int(c) for c in a.cams.split(","))
    make_obs(a.out, a.seed, cfg, cams, a.n_tokens, a.max_len, a.horizon, pad=not a.no_pad)


if __name__ == "__main__":
    main()
