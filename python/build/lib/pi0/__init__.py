"""Pi0 policies from Python: raw robot observations -> actions through libpi0 (ctypes).

    from pi0 import Policy
    policy = Policy("model.safetensors", "configs/libero.json", tokenizer=..., norm_stats=...)
    result = policy.infer(obs)   # {"actions": float64 (H, D), "policy_timing": {"infer_ms": ...}}

Same call shape as openpi's Policy.infer; nested observation dicts ({"images": {"cam_high": a}})
are flattened to '/'-joined keys ("images/cam_high") as openpi's transforms see them.
"""
from .policy import Pi0Error, Policy, flatten_obs
from ._lib import load_library

__all__ = ["Policy", "Pi0Error", "flatten_obs", "load_library"]
__version__ = "0.1.0"
