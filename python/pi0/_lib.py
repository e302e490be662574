"""ctypes declarations of include/pi0.h and include/pi0_policy.h (the parts the policy uses)."""
import ctypes
import ctypes.util
import logging
import os

_log = logging.getLogger("pi0")

PI0_NUM_CAMERAS = 3
ELEM = {"u1": 0, "b1": 1, "i4": 2, "i8": 3, "f4": 4, "f8": 5}  # pi0_elem_type by numpy kind+size
VALUE_ARRAY, VALUE_STRING = 0, 1
BACKENDS = {"auto": 0, "cpu": 1, "cuda": 2}


class ModelParams(ctypes.Structure):
    _fields_ = [("backend", ctypes.c_int), ("n_threads", ctypes.c_int), ("device", ctypes.c_int),
                ("progress", ctypes.c_void_p), ("progress_user", ctypes.c_void_p)]


class SessionParams(ctypes.Structure):
    _fields_ = [("action_horizon", ctypes.c_int), ("num_steps", ctypes.c_int), ("max_token_len", ctypes.c_int),
                ("profile_stages", ctypes.c_int), ("experimental", ctypes.c_uint)]


class PolicyParams(ctypes.Structure):
    _fields_ = [("checkpoint", ctypes.c_char_p), ("random_config", ctypes.c_char_p), ("random_seed", ctypes.c_uint64),
                ("policy_config", ctypes.c_char_p), ("tokenizer", ctypes.c_char_p), ("model", ModelParams),
                ("session", SessionParams), ("norm_stats", ctypes.c_char_p), ("default_prompt", ctypes.c_char_p)]


class ObsItem(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("kind", ctypes.c_int), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_int64 * 4), ("data", ctypes.c_void_p), ("str", ctypes.c_char_p)]


class PolicyResult(ctypes.Structure):
    _fields_ = [("actions", ctypes.POINTER(ctypes.c_double)), ("horizon", ctypes.c_int), ("action_dims", ctypes.c_int),
                ("infer_ms", ctypes.c_double), ("total_ms", ctypes.c_double)]


class Observation(ctypes.Structure):
    _fields_ = [("images", ctypes.POINTER(ctypes.c_float) * PI0_NUM_CAMERAS),
                ("image_mask", ctypes.c_int * PI0_NUM_CAMERAS), ("tokens", ctypes.POINTER(ctypes.c_int32)),
                ("token_mask", ctypes.POINTER(ctypes.c_uint8)), ("n_tokens", ctypes.c_int),
                ("state", ctypes.POINTER(ctypes.c_float)), ("noise", ctypes.POINTER(ctypes.c_float)),
                ("noise_seed", ctypes.c_uint64)]


class Config(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in (
        "image_size", "patch_size", "vit_width", "vit_depth", "vit_mlp", "vit_heads", "llm_width", "llm_depth",
        "llm_mlp", "exp_width", "exp_mlp", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "action_dim",
        "max_token_len", "action_horizon", "num_steps")]


LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _candidates():
    env = os.environ.get("PI0_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libpi0.so")
    yield os.path.join(os.path.dirname(os.path.dirname(here)), "build", "libpi0.so")
    found = ctypes.util.find_library("pi0")
    if found:
        yield found


_lib = None
_log_cb = None


def _on_log(level, msg, user):
    _log.log({0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING}.get(level, logging.ERROR),
             msg.decode("utf-8", "replace"))


def load_library(path=None):
    """Load libpi0.so once (path, else PI0_LIBRARY, next to the package, <repo>/build, system)."""
    global _lib, _log_cb
    if _lib is not None:
        return _lib
    tried = []
    for cand in ([path] if path else list(_candidates())):
        if not cand or (os.sep in cand and not os.path.exists(cand)):
            tried.append(cand)
            continue
        try:
            lib = ctypes.CDLL(cand)
            break
        except OSError as e:
            tried.append(f"{cand} ({e})")
    else:
        raise OSError("libpi0.so not found (set PI0_LIBRARY or build with CMake into ./build); tried: "
                      + ", ".join(map(str, tried)))
    lib.pi0_struct_size.restype = ctypes.c_size_t
    lib.pi0_struct_size.argtypes = [ctypes.c_char_p]
    for cname, mirror in (("pi0_model_params", ModelParams), ("pi0_session_params", SessionParams),
                          ("pi0_policy_params", PolicyParams), ("pi0_obs_item", ObsItem),
                          ("pi0_policy_result", PolicyResult), ("pi0_observation", Observation),
                          ("pi0_config", Config)):
        want = lib.pi0_struct_size(cname.encode())
        if want != ctypes.sizeof(mirror):
            raise OSError(f"{cand}: struct {cname} is {want} bytes in the library but {ctypes.sizeof(mirror)} "
                          "in the Python bindings (library and package versions differ)")
    lib.pi0_last_error.restype = ctypes.c_char_p
    lib.pi0_status_name.restype = ctypes.c_char_p
    lib.pi0_status_name.argtypes = [ctypes.c_int]
    lib.pi0_set_log.argtypes = [LOG_FN, ctypes.c_void_p]
    lib.pi0_policy_default_params.restype = PolicyParams
    lib.pi0_policy_create.argtypes = [ctypes.POINTER(PolicyParams), ctypes.POINTER(ctypes.c_void_p)]
    lib.pi0_policy_free.argtypes = [ctypes.c_void_p]
    lib.pi0_policy_infer.argtypes = [ctypes.c_void_p, ctypes.POINTER(ObsItem), ctypes.c_int,
                                     ctypes.POINTER(ctypes.c_float), ctypes.c_uint64, ctypes.POINTER(PolicyResult)]
    lib.pi0_policy_prepare.argtypes = [ctypes.c_void_p, ctypes.POINTER(ObsItem), ctypes.c_int,
                                       ctypes.POINTER(Observation)]
    lib.pi0_policy_shape.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    lib.pi0_policy_metadata_json.restype = ctypes.c_char_p
    lib.pi0_policy_metadata_json.argtypes = [ctypes.c_void_p]
    lib.pi0_policy_model.restype = ctypes.c_void_p
    lib.pi0_policy_model.argtypes = [ctypes.c_void_p]
    lib.pi0_model_config.restype = ctypes.POINTER(Config)
    lib.pi0_model_config.argtypes = [ctypes.c_void_p]
    _log_cb = LOG_FN(_on_log)
    lib.pi0_set_log(_log_cb, None)
    _lib = lib
    return lib
