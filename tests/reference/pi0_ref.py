#!/usr/bin/env python3
"""Independent float64 NumPy reference of the Pi0 policy (openpi `pi0`, pi05=False).

Written from /work/shared/pi0/SPEC.md sections 1-7 and 9.1 only. Everything is computed in
float64 with no intermediate rounding; only the flow-matching time grid uses float32 values
(SPEC 7). Dump names follow docs/FORMATS.md ("Intermediates").

CLI:  python3 tests/reference/pi0_ref.py --model M.safetensors --obs O.safetensors --out D.safetensors
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np as st  # noqa: E402

# ---------------------------------------------------------------- configuration (FORMATS.md)
FIELDS = ("image_size", "patch_size", "vit_width", "vit_depth", "vit_mlp", "vit_heads",
          "llm_width", "llm_depth", "llm_mlp", "exp_width", "exp_mlp",
          "num_heads", "num_kv_heads", "head_dim", "vocab_size",
          "action_dim", "max_token_len", "action_horizon", "num_steps")
FULL = dict(zip(FIELDS, (224, 14, 1152, 27, 4304, 16, 2048, 18, 16384, 1024, 4096,
                         8, 1, 256, 257152, 32, 48, 50, 10)))
TINY = dict(zip(FIELDS, (224, 14, 48, 2, 96, 4, 64, 2, 128, 32, 64,
                         2, 1, 16, 1024, 32, 48, 50, 10)))
CONFIGS = {"full": FULL, "tiny": TINY}
NUM_CAMERAS = 3


def load_config(metadata):
    """safetensors __metadata__ ("pi0.<field>": "<int>") -> config dict; absent keys = full."""
    cfg = dict(FULL)
    for f in FIELDS:
        v = (metadata or {}).get("pi0." + f)
        if v is not None:
            cfg[f] = int(v)
    return cfg


def config_metadata(cfg):
    return {"pi0." + f: str(cfg[f]) for f in FIELDS}


# ---------------------------------------------------------------- tensor names (SPEC 9.1)
V = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
PROJ = "paligemma_with_expert.paligemma.model.multi_modal_projector.linear."
LM = "paligemma_with_expert.paligemma.model.language_model."
EMB = "paligemma_with_expert.paligemma.lm_head.weight"
EMB_ALT = LM + "embed_tokens.weight"
EXP = "paligemma_with_expert.gemma_expert.model."
EXP_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"


def tensor_table(cfg):
    """[(name, shape)] of a checkpoint for cfg, in the order of the openpi tsv."""
    c = cfg
    D, p, F = c["vit_width"], c["patch_size"], c["vit_mlp"]
    n_patch = (c["image_size"] // p) ** 2
    qd, kvd = c["num_heads"] * c["head_dim"], c["num_kv_heads"] * c["head_dim"]
    t = [(V + "embeddings.patch_embedding.weight", (D, 3, p, p)),
         (V + "embeddings.patch_embedding.bias", (D,)),
         (V + "embeddings.position_embedding.weight", (n_patch, D))]
    for i in range(c["vit_depth"]):
        L = V + f"encoder.layers.{i}."
        t += [(L + "layer_norm1.weight", (D,)), (L + "layer_norm1.bias", (D,))]
        for pr in ("k", "v", "q", "out"):
            t += [(L + f"self_attn.{pr}_proj.weight", (D, D)), (L + f"self_attn.{pr}_proj.bias", (D,))]
        t += [(L + "layer_norm2.weight", (D,)), (L + "layer_norm2.bias", (D,)),
              (L + "mlp.fc1.weight", (F, D)), (L + "mlp.fc1.bias", (F,)),
              (L + "mlp.fc2.weight", (D, F)), (L + "mlp.fc2.bias", (D,))]
    t += [(V + "post_layernorm.weight", (D,)), (V + "post_layernorm.bias", (D,)),
          (PROJ + "weight", (c["llm_width"], D)), (PROJ + "bias", (c["llm_width"],))]

    def gemma(prefix, W, M):
        g = []
        for i in range(c["llm_depth"]):
            L = prefix + f"layers.{i}."
            g += [(L + "self_attn.q_proj.weight", (qd, W)), (L + "self_attn.k_proj.weight", (kvd, W)),
                  (L + "self_attn.v_proj.weight", (kvd, W)), (L + "self_attn.o_proj.weight", (W, qd)),
                  (L + "mlp.gate_proj.weight", (M, W)), (L + "mlp.up_proj.weight", (M, W)),
                  (L + "mlp.down_proj.weight", (W, M)),
                  (L + "input_layernorm.weight", (W,)), (L + "post_attention_layernorm.weight", (W,))]
        return g + [(prefix + "norm.weight", (W,))]

    E, A = c["exp_width"], c["action_dim"]
    t += gemma(LM, c["llm_width"], c["llm_mlp"])
    t += [(EMB, (c["vocab_size"], c["llm_width"]))]
    t += gemma(EXP, E, c["exp_mlp"])
    t += [(EXP_HEAD, (c["vocab_size"], E)),
          ("action_in_proj.weight", (E, A)), ("action_in_proj.bias", (E,)),
          ("action_out_proj.weight", (A, E)), ("action_out_proj.bias", (A,)),
          ("state_proj.weight", (E, A)), ("state_proj.bias", (E,)),
          ("action_time_mlp_in.weight", (E, 2 * E)), ("action_time_mlp_in.bias", (E,)),
          ("action_time_mlp_out.weight", (E, E)), ("action_time_mlp_out.bias", (E,))]
    return t


def random_weights(cfg, seed=0, bf16=True):
    """Random float32 weights with the checkpoint layout (values bf16-exact when bf16=True).
    Linear weights ~ N(0, 1/fan_in); LN gains ~ 1; RMSNorm w small (used as 1+w)."""
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape in tensor_table(cfg):
        if name.endswith("layer_norm1.weight") or name.endswith("layer_norm2.weight") \
                or name.endswith("post_layernorm.weight"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif "layernorm.weight" in name or name.endswith("norm.weight"):
            a = 0.1 * rng.standard_normal(shape)          # RMSNorm w, gain is 1 + w
        elif name in (EMB, EXP_HEAD):
            a = rng.standard_normal(shape) / math.sqrt(shape[1])
        elif name.endswith(".bias") or name.endswith("position_embedding.weight"):
            a = 0.1 * rng.standard_normal(shape)
        else:                                             # [out, in(, kh, kw)]
            a = rng.standard_normal(shape) / math.sqrt(int(np.prod(shape[1:])))
        a = a.astype(np.float32)
        w[name] = st.bf16_round(a) if bf16 else a
    return w


# ---------------------------------------------------------------- elementwise ops (SPEC 1.5)
MASK_VALUE = -2.3819763e38  # finite fill of masked logits (SPEC 1.4)


def layer_norm(x, g, b, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def rms_norm(x, w, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (1.0 + w)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))  # x * sigmoid(x), overflow-free


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def rope(u, pos, base=10000.0):
    """Split-halves RoPE over all head dims. u: [T, heads, hd], pos: [T] ints."""
    hd = u.shape[-1]
    half = hd // 2
    inv = base ** (-(2.0 * np.arange(half)) / hd)
    ang = np.asarray(pos, dtype=np.float64)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = u[..., :half], u[..., half:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def make_attn_mask(valid, ar):
    """SPEC 4.2: q may attend k iff valid[q] & valid[k] & cumsum(ar)[k] <= cumsum(ar)[q]."""
    valid = np.asarray(valid, dtype=bool)
    c = np.cumsum(np.asarray(ar, dtype=np.int64))
    return valid[:, None] & valid[None, :] & (c[None, :] <= c[:, None])


def gqa_attention(q, k, v, mask):
    """q: [T, nh, hd] (already scaled), k/v: [S, nkv, hd], mask: [T, S] bool or None.
    Query head n uses kv head n // (nh / nkv). Returns [T, nh*hd] (head-major columns)."""
    T, nh, hd = q.shape
    nkv = k.shape[1]
    g = nh // nkv
    qh = q.reshape(T, nkv, g, hd).transpose(1, 2, 0, 3)          # [nkv, g, T, hd]
    logits = qh @ k.transpose(1, 2, 0)[:, None]                   # [nkv, g, T, S]
    if mask is not None:
        logits = np.where(mask, logits, MASK_VALUE)
    o = softmax(logits) @ v.transpose(1, 0, 2)[:, None]           # [nkv, g, T, hd]
    return o.transpose(2, 0, 1, 3).reshape(T, nh * hd)


# ---------------------------------------------------------------- model
class _W:
    """float64 view of the weights (upcast on access)."""

    def __init__(self, weights):
        self.w = weights

    def __call__(self, name):
        return np.asarray(self.w[name], dtype=np.float64)

    def rows(self, name, idx):
        if hasattr(self.w, "rows"):
            return np.asarray(self.w.rows(name, idx), dtype=np.float64)
        return np.asarray(self.w[name][np.asarray(idx, dtype=np.int64)], dtype=np.float64)

    def embedding_rows(self, idx):
        name = EMB if EMB in self.w else EMB_ALT
        return self.rows(name, idx)


def siglip(W, cfg, imgs):
    """imgs: [C, S, S, 3] HWC in [-1,1] -> projected image tokens [C, n_patch, llm_width]."""
    C, S = imgs.shape[0], cfg["image_size"]
    p, D, nh = cfg["patch_size"], cfg["vit_width"], cfg["vit_heads"]
    g, hd = S // p, D // nh
    # patch vectors in (c, kh, kw) order to match the OIHW conv kernel; token = row*g + col
    x = imgs.reshape(C, g, p, g, p, 3).transpose(0, 1, 3, 5, 2, 4).reshape(C, g * g, 3 * p * p)
    x = x @ W(V + "embeddings.patch_embedding.weight").reshape(D, -1).T
    x = x + W(V + "embeddings.patch_embedding.bias") + W(V + "embeddings.position_embedding.weight")
    N = g * g
    for i in range(cfg["vit_depth"]):
        L = V + f"encoder.layers.{i}."

        def lin(h, n):
            return h @ W(L + n + ".weight").T + W(L + n + ".bias")

        h = layer_norm(x, W(L + "layer_norm1.weight"), W(L + "layer_norm1.bias"))
        q, k, v = (lin(h, f"self_attn.{n}_proj").reshape(C, N, nh, hd).transpose(0, 2, 1, 3)
                   for n in ("q", "k", "v"))                       # [C, nh, N, hd]
        a = softmax((q @ k.transpose(0, 1, 3, 2)) / math.sqrt(hd))
        o = (a @ v).transpose(0, 2, 1, 3).reshape(C, N, D)
        x = x + lin(o, "self_attn.out_proj")
        h = layer_norm(x, W(L + "layer_norm2.weight"), W(L + "layer_norm2.bias"))
        x = x + lin(gelu_tanh(lin(h, "mlp.fc1")), "mlp.fc2")
    x = layer_norm(x, W(V + "post_layernorm.weight"), W(V + "post_layernorm.bias"))
    return x @ W(PROJ + "weight").T + W(PROJ + "bias")


def gemma_layer(W, cfg, L, x, pos, kv_extra=None, mask=None, need_out=True):
    """One Gemma block (SPEC 5.1/5.3). kv_extra = (K, V) [S0, nkv*hd] prepended to this
    block's own keys/values (the prefix cache). Returns (x_out, k, v) with k post-RoPE."""
    nh, nkv, hd = cfg["num_heads"], cfg["num_kv_heads"], cfg["head_dim"]
    T = x.shape[0]
    h = rms_norm(x, W(L + "input_layernorm.weight"))
    q = rope((h @ W(L + "self_attn.q_proj.weight").T).reshape(T, nh, hd), pos)
    k = rope((h @ W(L + "self_attn.k_proj.weight").T).reshape(T, nkv, hd), pos)
    v = (h @ W(L + "self_attn.v_proj.weight").T).reshape(T, nkv, hd)
    k2, v2 = k.reshape(T, nkv * hd), v.reshape(T, nkv * hd)
    if not need_out:
        return None, k2, v2
    K, Vv = k, v
    if kv_extra is not None:
        K = np.concatenate([kv_extra[0].reshape(-1, nkv, hd), k])
        Vv = np.concatenate([kv_extra[1].reshape(-1, nkv, hd), v])
    o = gqa_attention(q * hd ** -0.5, K, Vv, mask)
    x = x + o @ W(L + "self_attn.o_proj.weight").T
    h = rms_norm(x, W(L + "post_attention_layernorm.weight"))
    m = gelu_tanh(h @ W(L + "mlp.gate_proj.weight").T) * (h @ W(L + "mlp.up_proj.weight").T)
    return x + m @ W(L + "mlp.down_proj.weight").T, k2, v2


def time_embedding(t, width, min_period=4e-3, max_period=4.0):
    """SPEC 6.2: [sin(a), cos(a)], a_i = t*2pi/period_i, period = min*(max/min)^linspace(0,1,w/2)."""
    frac = np.linspace(0.0, 1.0, width // 2)
    period = min_period * (max_period / min_period) ** frac
    a = float(t) * (2.0 * math.pi / period)
    return np.concatenate([np.sin(a), np.cos(a)])


def time_schedule(num_steps):
    """SPEC 7: float32 t values (t0 = 1, t += dt in f32 while t >= -dt/2) and float32 dt."""
    dt = np.float32(-1.0 / num_steps)
    t = np.float32(1.0)
    ts = []
    while t >= -dt / np.float32(2.0):
        ts.append(t)
        t = np.float32(t + dt)
    assert len(ts) == num_steps, (num_steps, len(ts))
    return ts, dt


def velocity(W, cfg, cache, prefix_valid, state, x, t):
    """One action-expert pass (SPEC 6): v_t [H, action_dim] for noisy actions x at time t.
    cache: per layer (K, V) [P_total, nkv*hd]; prefix_valid: [P_total] bool."""
    H, E = x.shape[0], cfg["exp_width"]
    s_tok = state @ W("state_proj.weight").T + W("state_proj.bias")
    a = x @ W("action_in_proj.weight").T + W("action_in_proj.bias")
    temb = np.broadcast_to(time_embedding(t, E), (H, E))
    u = np.concatenate([a, temb], axis=1)                      # action features first, time second
    h = silu(u @ W("action_time_mlp_in.weight").T + W("action_time_mlp_in.bias"))
    act = h @ W("action_time_mlp_out.weight").T + W("action_time_mlp_out.bias")
    xs = np.concatenate([s_tok[None, :], act])                 # [1 + H, E]
    S, Pt = 1 + H, len(prefix_valid)
    # joint mask via the SPEC 4.2 rule: prefix ar 0, state ar 1, first action ar 1, rest 0
    ar = np.concatenate([np.zeros(Pt, np.int64), [1, 1], np.zeros(H - 1, np.int64)])
    valid = np.concatenate([prefix_valid, np.ones(S, bool)])
    mask = make_attn_mask(valid, ar)[Pt:]                       # suffix query rows [S, Pt + S]
    pos = int(np.sum(prefix_valid)) + np.arange(S)
    for l in range(cfg["llm_depth"]):
        xs, _, _ = gemma_layer(W, cfg, EXP + f"layers.{l}.", xs, pos, cache[l], mask)
    y = rms_norm(xs, W(EXP + "norm.weight"))[-H:]
    return y @ W("action_out_proj.weight").T + W("action_out_proj.bias")


def run(weights, cfg, obs, num_steps=None, compact=True):
    """Full Pi0 inference in float64. Returns the FORMATS.md intermediates dict.
    compact=False runs openpi's padded layout instead (all 3 slots + all L text tokens, masks and
    cumsum positions, SPEC 4.1-4.4); the dumped K/V are then the valid rows (must match compact)."""
    W = _W(weights)
    num_steps = num_steps or cfg["num_steps"]
    imgs = np.asarray(obs["images"], dtype=np.float64)
    cam_ok = np.asarray(obs["image_masks"]).astype(bool).reshape(-1)
    tokens = np.asarray(obs["tokens"]).astype(np.int64).reshape(-1)
    tok_ok = np.asarray(obs["token_mask"]).astype(bool).reshape(-1)
    state = np.asarray(obs["state"], dtype=np.float64).reshape(-1)
    noise = np.asarray(obs["noise"], dtype=np.float64)
    assert imgs.shape[0] == NUM_CAMERAS and len(cam_ok) == NUM_CAMERAS and len(tokens) == len(tok_ok)
    n_patch = (cfg["image_size"] // cfg["patch_size"]) ** 2
    out = {}

    # vision: openpi encodes every slot; compact mode only the valid ones (SPEC 3.2 note)
    cams = list(range(NUM_CAMERAS)) if not compact else [c for c in range(NUM_CAMERAS) if cam_ok[c]]
    emb = siglip(W, cfg, imgs[cams]) if cams else np.zeros((0, n_patch, cfg["llm_width"]))
    for i, c in enumerate(cams):
        if cam_ok[c]:
            out[f"img_emb.{c}"] = emb[i]

    # prefix (SPEC 4): images in slot order, then text scaled by sqrt(llm_width)
    if compact:
        txt_ids = tokens[tok_ok]
        valid = np.ones(len(cams) * n_patch + len(txt_ids), bool)
    else:
        txt_ids = tokens
        valid = np.concatenate([np.repeat(cam_ok, n_patch), tok_ok])
    txt = W.embedding_rows(txt_ids) * math.sqrt(cfg["llm_width"])
    x = np.concatenate([emb.reshape(-1, cfg["llm_width"]), txt])
    pos = np.cumsum(valid) - 1
    P = int(valid.sum())
    out["prefix_len"] = np.array([P], dtype=np.int32)
    mask = None if compact else make_attn_mask(valid, np.zeros(len(valid), np.int64))

    # prefill with the Gemma-2B weights; keep post-RoPE K/V per layer (SPEC 5.4)
    cache = []
    depth = cfg["llm_depth"]
    for l in range(depth):
        x, k, v = gemma_layer(W, cfg, LM + f"layers.{l}.", x, pos, None, mask,
                              need_out=l < depth - 1)  # last layer's tail is dead work
        cache.append((k, v))
        out[f"k.{l}"], out[f"v.{l}"] = k[valid], v[valid]

    # flow-matching sampler (SPEC 7): Euler from t = 1 (noise) to t = 0
    ts, dt = time_schedule(num_steps)
    xt = noise.copy()
    for i, t in enumerate(ts):
        vel = velocity(W, cfg, cache, valid, state, xt, float(t))
        if i == 0:
            out["velocity.0"] = vel
        xt = xt + float(dt) * vel
    out["actions"] = xt
    return out


# ---------------------------------------------------------------- CLI
def save_dump(path, out):
    t = {k: (np.asarray(v, np.int32) if k == "prefix_len" else np.asarray(v, np.float32))
         for k, v in out.items()}
    st.save(path, t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--obs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--num-steps", type=int, default=None)
    ap.add_argument("--padded", action="store_true", help="use the uncompacted openpi layout")
    a = ap.parse_args(argv)
    weights, meta = st.load(a.model, lazy=True)
    cfg = load_config(meta)
    obs, _ = st.load(a.obs)
    if "noise" not in obs:
        sys.exit("pi0_ref: the observation must contain `noise`")
    out = run(weights, cfg, obs, num_steps=a.num_steps, compact=not a.padded)
    save_dump(a.out, out)


if __name__ == "__main__":
    main()
