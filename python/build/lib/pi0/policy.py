"""The Policy class over pi0_policy_* (include/pi0_policy.h)."""
import ctypes
import json
import os
import time

import numpy as np

from . import _lib


class Pi0Error(RuntimeError):
    """A libpi0 call failed; .status is the status name ("PI0_ERR_INVALID_ARG", ...)."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def flatten_obs(obs, prefix=""):
    """{"images": {"cam_high": a}, "state": s} -> {"images/cam_high": a, "state": s}."""
    flat = {}
    for k, v in obs.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_obs(v, key + "/"))
        else:
            flat[key] = v
    return flat


def _as_array(v):
    a = np.asarray(v)
    kind = a.dtype.kind
    if kind == "b":
        a = a.astype(np.bool_)
    elif kind == "u" and a.dtype.itemsize == 1:
        pass
    elif kind in "iu":
        a = a if (kind == "i" and a.dtype.itemsize in (4, 8)) else a.astype(np.int64)
    elif kind == "f":
        a = a if a.dtype.itemsize in (4, 8) else a.astype(np.float32)
    else:
        raise TypeError(f"unsupported dtype {a.dtype}")
    return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))


class Policy:
    """A Pi0 policy: model + policy config (adapter, norm stats, tokenizer).

    checkpoint: model.safetensors, or None for random weights of `random_config` ("tiny"/"full").
    config: policy config JSON (docs/POLICY.md). tokenizer / norm_stats / default_prompt override
    the config's. backend: "auto", "cpu" or "cuda". seed: first noise seed (incremented per call
    when infer gets neither noise nor seed)."""

    def __init__(self, checkpoint, config, *, tokenizer=None, norm_stats=None, default_prompt=None, backend="auto",
                 threads=0, action_horizon=0, num_steps=0, random_config="tiny", random_seed=0, seed=None,
                 library=None):
        self._lib = _lib.load_library(library)
        self._h = None
        p = self._lib.pi0_policy_default_params()
        self._keep = []

        def s(x):
            if x is None:
                return None
            b = os.fsencode(x) if not isinstance(x, bytes) else x
            self._keep.append(b)
            return b

        p.checkpoint = s(checkpoint)
        p.random_config = s(random_config)
        p.random_seed = random_seed
        p.policy_config = s(config)
        p.tokenizer = s(tokenizer)
        p.norm_stats = s(norm_stats)
        p.default_prompt = default_prompt.encode("utf-8") if default_prompt is not None else None
        if p.default_prompt is not None:
            self._keep.append(p.default_prompt)
        if backend not in _lib.BACKENDS:
            raise ValueError(f"backend must be one of {sorted(_lib.BACKENDS)}")
        p.model.backend = _lib.BACKENDS[backend]
        p.model.n_threads = threads
        p.session.action_horizon = action_horizon
        p.session.num_steps = num_steps
        h = ctypes.c_void_p()
        self._check(self._lib.pi0_policy_create(ctypes.byref(p), ctypes.byref(h)))
        self._h = h
        H, D = ctypes.c_int(), ctypes.c_int()
        self._lib.pi0_policy_shape(h, ctypes.byref(H), ctypes.byref(D))
        self.action_horizon, self.action_dims = H.value, D.value
        self.model_config = self._lib.pi0_model_config(self._lib.pi0_policy_model(h)).contents
        self._seed = int.from_bytes(os.urandom(8), "little") if seed is None else int(seed)

    # ---- helpers ----
    def _check(self, status):
        if status != 0:
            name = self._lib.pi0_status_name(status).decode()
            raise Pi0Error(name, self._lib.pi0_last_error().decode("utf-8", "replace"))

    def _items(self, obs):
        flat = flatten_obs(obs)
        items = (_lib.ObsItem * max(1, len(flat)))()
        keep = []
        n = 0
        for key, v in flat.items():
            if v is None:
                continue
            it = items[n]
            kb = key.encode("utf-8")
            keep.append(kb)
            it.key = kb
            if isinstance(v, np.ndarray) and v.dtype.kind == "U" and v.ndim == 0:
                v = str(v)
            if isinstance(v, (str, bytes)):
                b = v.encode("utf-8") if isinstance(v, str) else bytes(v)
                if b"\0" in b:
                    raise ValueError(f"observation key '{key}': string contains a NUL character")
                keep.append(b)
                it.kind, it.str = _lib.VALUE_STRING, b
            else:
                try:
                    a = _as_array(v)
                except TypeError as e:
                    raise TypeError(f"observation key '{key}': {e}") from None
                if a.ndim > 4:
                    raise ValueError(f"observation key '{key}' has {a.ndim} dimensions (at most 4)")
                keep.append(a)
                it.kind = _lib.VALUE_ARRAY
                it.dtype = _lib.ELEM[f"{a.dtype.kind}{a.dtype.itemsize}"]
                it.ndim = a.ndim
                for d in range(a.ndim):
                    it.shape[d] = a.shape[d]
                it.data = a.ctypes.data
            n += 1
        return items, n, keep

    def _noise(self, noise):
        if noise is None:
            return None, None
        A = self.model_config.action_dim
        a = np.ascontiguousarray(np.asarray(noise, dtype=np.float32))
        if a.ndim == 3 and a.shape[0] == 1:
            a = a[0]
        if a.shape != (self.action_horizon, A):
            raise ValueError(f"noise must have shape ({self.action_horizon}, {A}), got {a.shape}")
        return a, a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    # ---- API ----
    def infer(self, obs, *, noise=None, seed=None):
        """obs (nested dict) -> {"actions": float64 (horizon, action_dims), "policy_timing": {"infer_ms": ...}}.
        noise: optional (horizon, action_dim) float normalized-space noise; else drawn from seed."""
        if self._h is None:
            raise RuntimeError("policy is closed")
        t0 = time.monotonic()
        items, n, keep = self._items(obs)
        arr, ptr = self._noise(noise)
        if seed is None:
            seed, self._seed = self._seed, (self._seed + 1) % (1 << 64)
        res = _lib.PolicyResult()
        self._check(self._lib.pi0_policy_infer(self._h, items, n, ptr, seed, ctypes.byref(res)))
        actions = np.ctypeslib.as_array(res.actions, shape=(res.horizon, res.action_dims)).copy()
        del keep, arr
        # transforms + model in C, and the whole call from Python (openpi reports the model call only)
        self.last_total_ms = float(res.total_ms)
        self.last_python_ms = (time.monotonic() - t0) * 1e3
        return {"actions": actions, "policy_timing": {"infer_ms": float(res.infer_ms)}}

    def prepare(self, obs):
        """Only the input transforms: the model-boundary observation (SPEC §10.2) as numpy copies."""
        items, n, keep = self._items(obs)
        o = _lib.Observation()
        self._check(self._lib.pi0_policy_prepare(self._h, items, n, ctypes.byref(o)))
        c = self.model_config
        S = c.image_size
        images = np.stack([np.ctypeslib.as_array(o.images[k], shape=(S, S, 3)).copy() for k in range(3)])
        del keep
        return {"images": images, "image_masks": np.array(list(o.image_mask), np.uint8),
                "tokens": np.ctypeslib.as_array(o.tokens, shape=(o.n_tokens,)).copy(),
                "token_mask": np.ctypeslib.as_array(o.token_mask, shape=(o.n_tokens,)).copy(),
                "state": np.ctypeslib.as_array(o.state, shape=(c.action_dim,)).copy()}

    @property
    def metadata(self):
        """The policy metadata (sent to clients on connect by openpi's server)."""
        return json.loads(self._lib.pi0_policy_metadata_json(self._h).decode("utf-8"))

    def close(self):
        if self._h is not None:
            self._lib.pi0_policy_free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
