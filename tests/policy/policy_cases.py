"""Raw observations, norm stats and configs for the policy round-trip tests."""
import json
import os

import numpy as np

import safetensors_np as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs")


def norm_stats(rng, n_state, n_actions):
    def entry(n):
        mean = rng.normal(0, 0.5, n)
        std = rng.uniform(0.2, 2.0, n)
        q01 = mean - 2 * std
        q99 = mean + 2.5 * std
        return {"mean": mean.tolist(), "std": std.tolist(), "q01": q01.tolist(), "q99": q99.tolist()}
    return {"norm_stats": {"state": entry(n_state), "actions": entry(n_actions)}}


def _u8(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def aloha_obs(rng, prompt=True):
    state = rng.uniform(-1, 1, 14)
    state[[6, 13]] = rng.uniform(0.05, 0.95, 2)  # gripper positions in [0, 1]
    obs = {"images": {"cam_high": _u8(rng, (3, 120, 160)),
                      "cam_left_wrist": rng.uniform(0, 1, (3, 60, 80)).astype(np.float32),
                      "cam_low": _u8(rng, (3, 30, 40))},
           "state": state}
    if prompt:
        obs["prompt"] = "Transfer the_cube\n "
    return obs


def droid_obs(rng):
    return {"observation/exterior_image_1_left": _u8(rng, (90, 160, 3)),
            "observation/wrist_image_left": rng.uniform(0, 1, (3, 224, 224)),
            "observation/joint_position": rng.uniform(-1, 1, 7).astype(np.float32),
            "observation/gripper_position": np.float64(rng.uniform(0, 1)),
            "prompt": "pick up the red cube"}


def libero_obs(rng):
    return {"observation/image": _u8(rng, (224, 224, 3)),
            "observation/wrist_image": _u8(rng, (256, 256, 3)),
            "observation/state": rng.uniform(-1, 1, 8).astype(np.float32),
            "prompt": "open the drawer and put the bowl in it"}


# name -> (config file, adapter, obs builder, state dims, action stats dims, delta mask)
CASES = {
    "aloha_sim": ("aloha_sim.json", "aloha", lambda r: aloha_obs(r, prompt=False), 14, 14, None),
    "aloha": ("aloha.json", "aloha", aloha_obs, 14, 14, [True] * 6 + [False] + [True] * 6 + [False]),
    "droid": ("droid.json", "droid", droid_obs, 8, 8, None),
    "libero": ("libero.json", "libero", libero_obs, 8, 7, [True] * 6 + [False]),
}

DEFAULT_PROMPTS = {"aloha_sim": "Transfer cube"}
HORIZONS = {"droid": 10}


def flatten(obs, prefix=""):
    out = {}
    for k, v in obs.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def save_raw_obs(path, obs):
    """Raw observation file (docs/POLICY.md): one tensor per key path, prompt as U8 UTF-8."""
    tensors = {}
    for k, v in flatten(obs).items():
        if isinstance(v, str):
            v = np.frombuffer(v.encode("utf-8"), np.uint8)
        tensors[k] = np.asarray(v)
    st.save(str(path), tensors)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)
