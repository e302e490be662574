"""Reference of openpi's policy transforms in NumPy + Pillow + the sentencepiece package,
written from SPEC §9.3, §10 (independent of the C code): the tests compare the C policy layer
against it."""
import numpy as np
from PIL import Image

IMAGE_SIZE = 224
SLOTS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
ALOHA_FLIP = np.array([1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1])


# ---- images (SPEC §10.4) ------------------------------------------------------------
PILLOW_MAJOR = int(Image.__version__.split(".")[0])


def pillow_resize(pil, size, order="pillow11"):
    """Pillow BILINEAR resize. order "pillow11": the pass order of Pillow <= 12.1 (openpi pins
    11.2.1): horizontal first, reproduced exactly with any Pillow as two one-axis resizes;
    "native": the installed Pillow's own order."""
    if order == "native" or size[0] == pil.size[0] or size[1] == pil.size[1]:
        return pil.resize(size, resample=Image.BILINEAR)
    return pil.resize((size[0], pil.size[1]), resample=Image.BILINEAR).resize(size, resample=Image.BILINEAR)


def resize_with_pad(img, height=IMAGE_SIZE, width=IMAGE_SIZE, order="pillow11"):
    """uint8 HWC -> (height, width, 3) like openpi_client.image_tools.resize_with_pad."""
    if img.shape[:2] == (height, width):
        return img
    pil = Image.fromarray(img)
    w, h = pil.size
    ratio = max(w / width, h / height)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = pillow_resize(pil, (rw, rh), order)
    canvas = Image.new(resized.mode, (width, height), 0)
    canvas.paste(resized, (max(0, int((width - rw) / 2)), max(0, int((height - rh) / 2))))
    return np.asarray(canvas)


def to_uint8(img):
    img = np.asarray(img)
    if np.issubdtype(img.dtype, np.floating):
        img = (255 * img).astype(np.uint8)
    return img


def to_unit(img_u8):
    return img_u8.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)


# ---- prompt (SPEC §10.3) ----------------------------------------------------------
def clean_prompt(prompt):
    return prompt.strip().replace("_", " ").replace("\n", " ")


def tokenize(sp, prompt, max_len=48):
    ids = sp.encode(clean_prompt(prompt), add_bos=True) + sp.encode("\n")
    n = len(ids)
    if n < max_len:
        return np.array(ids + [0] * (max_len - n), np.int32), np.array([1] * n + [0] * (max_len - n), np.uint8), n
    return np.array(ids[:max_len], np.int32), np.ones(max_len, np.uint8), n


# ---- norm stats (SPEC §9.3) --------------------------------------------------------
def normalize(x, st, quantile=False):
    d = x.shape[-1]
    if quantile:
        q01, q99 = np.asarray(st["q01"])[:d], np.asarray(st["q99"])[:d]
        return (x - q01) / (q99 - q01 + 1e-6) * 2.0 - 1.0
    return (x - np.asarray(st["mean"])[:d]) / (np.asarray(st["std"])[:d] + 1e-6)


def unnormalize(x, st, quantile=False):
    d = x.shape[-1]
    if quantile:
        q01, q99 = np.asarray(st["q01"], np.float64), np.asarray(st["q99"], np.float64)
        k = len(q01)
        return np.concatenate([(x[..., :k] + 1.0) / 2.0 * (q99 - q01 + 1e-6) + q01, x[..., k:]], axis=-1)
    mean = np.pad(np.asarray(st["mean"], np.float64), (0, d - len(st["mean"])), constant_values=0.0)
    std = np.pad(np.asarray(st["std"], np.float64), (0, d - len(st["std"])), constant_values=1.0)
    return x * (std + 1e-6) + mean


# ---- ALOHA (SPEC §10.5) -------------------------------------------------------------
def aloha_gripper_to_angular(v):
    lin = v * (0.05800 - 0.01844) + 0.01844
    x = (0.022 ** 2 + lin ** 2 - 0.036 ** 2) / (2 * 0.022 * lin)
    rad = np.arcsin(np.clip(x, -1.0, 1.0))
    return (rad - 0.5476) / (1.6296 - 0.5476)


def aloha_gripper_from_angular(v):
    return (v + 0.5476 - -0.6213) / (1.4910 - -0.6213)


def aloha_state_in(state):
    s = ALOHA_FLIP * np.asarray(state, np.float64)
    s[[6, 13]] = aloha_gripper_to_angular(s[[6, 13]])
    return s


def aloha_actions_out(a):
    a = ALOHA_FLIP * a[:, :14]
    a[:, [6, 13]] = aloha_gripper_from_angular(a[:, [6, 13]])
    return a


# ---- whole pipeline ---------------------------------------------------------------
ADAPTERS = {
    "aloha": dict(images={"base_0_rgb": "images/cam_high", "left_wrist_0_rgb": "images/cam_left_wrist",
                          "right_wrist_0_rgb": "images/cam_right_wrist"}, layout="CHW", state=["state"], dims=14),
    "droid": dict(images={"base_0_rgb": "observation/exterior_image_1_left",
                          "left_wrist_0_rgb": "observation/wrist_image_left"}, layout="auto",
                  state=["observation/joint_position", "observation/gripper_position"], dims=8),
    "libero": dict(images={"base_0_rgb": "observation/image", "left_wrist_0_rgb": "observation/wrist_image"},
                   layout="auto", state=["observation/state"], dims=7),
}


def hwc(img, layout):
    img = to_uint8(img)
    if layout == "CHW" or (layout == "auto" and img.shape[0] == 3):
        img = np.transpose(img, (1, 2, 0))
    return np.ascontiguousarray(img)


def prepare(obs, adapter, norm, sp, default_prompt=None, action_dim=32, max_len=48, quantile=False):
    """Flat raw observation -> model-boundary dict (images (3,224,224,3) f32, image_masks,
    tokens, token_mask, state f32 [action_dim])."""
    a = ADAPTERS[adapter]
    images, masks = [], []
    for slot in SLOTS:
        key = a["images"].get(slot)
        if key in obs:
            images.append(to_unit(resize_with_pad(hwc(obs[key], a["layout"]))))
            masks.append(1)
        else:
            images.append(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), -1.0, np.float32))
            masks.append(0)
    state = np.concatenate([np.atleast_1d(np.asarray(obs[k], np.float64)) for k in a["state"]])
    if adapter == "aloha":
        state = aloha_state_in(state)
    state = normalize(state, norm["state"], quantile)
    state = np.pad(state, (0, action_dim - len(state))).astype(np.float32)
    prompt = obs.get("prompt", default_prompt)
    if isinstance(prompt, (bytes, np.ndarray)):
        prompt = bytes(prompt).decode("utf-8")
    tokens, mask, _ = tokenize(sp, prompt, max_len)
    return {"images": np.stack(images), "image_masks": np.array(masks, np.uint8), "tokens": tokens,
            "token_mask": mask, "state": state}


def outputs(actions_norm, state_norm, adapter, norm, delta_mask=None, quantile=False):
    """Normalized model actions (H, 32) f32 + model state (32,) f32 -> robot actions f64."""
    a = unnormalize(actions_norm.astype(np.float64), norm["actions"], quantile)
    s = unnormalize(state_norm.astype(np.float64), norm["state"], quantile)
    if delta_mask is not None:
        m = np.asarray(delta_mask)
        a[..., :len(m)] += np.where(m, s[:len(m)], 0)[None, :]
    if adapter == "aloha":
        return aloha_actions_out(a)
    return a[:, :ADAPTERS[adapter]["dims"]]
