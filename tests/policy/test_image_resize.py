"""C resize (src/policy/image_resize.c) vs Pillow: plain BILINEAR resizes of many sizes (up and
down, tiny 1xN, odd ratios, 1 and 3 channels) and openpi's resize_with_pad. Expected: bit-exact.

Two pass orders: Pillow <= 12.1 (openpi's pinned 11.2.1) always resamples horizontally first;
Pillow 13 goes vertical first when the height shrinks much more than the width. The C default is
the former, compared with two one-axis Pillow resizes (exact in any Pillow version); the Pillow 13
order is compared with the installed Pillow when it is 13 or newer."""
import numpy as np
import pytest
from PIL import Image

import policy_ref
import safetensors_np as st
from conftest import run


def _pairs(rng):
    sizes = [(1, 1), (1, 7), (7, 1), (1, 500), (500, 1), (2, 3), (3, 2), (5, 224), (224, 5), (224, 224),
             (223, 225), (225, 223), (480, 640), (720, 1280), (96, 96), (100, 300), (300, 100), (17, 999),
             (1000, 3), (448, 448), (112, 112), (224, 100), (100, 224), (256, 320)]
    sizes += [(int(rng.integers(1, 700)), int(rng.integers(1, 700))) for _ in range(40)]
    targets = [(224, 224), (1, 1), (1, 224), (224, 1), (13, 31), (300, 300), (2, 2), (57, 90), (224, 74)]
    return sizes, targets


def _image(rng, h, w, c, kind):
    if kind == "random":
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if kind == "extremes":
        return (rng.integers(0, 2, (h, w, c)) * 255).astype(np.uint8)
    y, x = np.mgrid[0:h, 0:w]
    g = ((x * 255) // max(w - 1, 1) + (y * 127) // max(h - 1, 1)) % 256
    return np.repeat(g[..., None], c, axis=2).astype(np.uint8)


ORDERS = [("pillow11", "11", "pillow11")]
if policy_ref.PILLOW_MAJOR >= 13:
    ORDERS.append(("pillow13", "13", "native"))


@pytest.mark.parametrize("label,c_order,ref_order", ORDERS, ids=[o[0] for o in ORDERS])
def test_resize_bilinear_matches_pillow(tool, tmp_path, base_seed, label, c_order, ref_order):
    rng = np.random.default_rng(base_seed)
    sizes, targets = _pairs(rng)
    tensors, meta, expect = {}, {}, {}
    i = 0
    for (h, w) in sizes:
        for (oh, ow) in [targets[int(rng.integers(len(targets)))], (int(rng.integers(1, 400)), int(rng.integers(1, 400))),
                         (max(1, h // 3), max(1, w - 1))]:
            c = int(rng.choice([3, 3, 1]))
            img = _image(rng, h, w, c, ["random", "extremes", "gradient"][i % 3])
            name = f"img{i}"
            tensors[name] = img
            meta[f"{name}.size"] = f"{oh},{ow}"
            meta[f"{name}.order"] = c_order
            pil = Image.fromarray(img[..., 0] if c == 1 else img)
            expect[name] = np.asarray(policy_ref.pillow_resize(pil, (ow, oh), ref_order)).reshape(oh, ow, c)
            i += 1
    st.save(str(tmp_path / "in.safetensors"), tensors, metadata=meta)
    run(tool, "resize", tmp_path / "in.safetensors", tmp_path / "out.safetensors")
    got, gmeta = st.load(str(tmp_path / "out.safetensors"))
    exact = maxdiff = 0
    for name, ref in expect.items():
        assert name in got, gmeta.get(f"{name}.error")
        d = int(np.abs(got[name].astype(int) - ref.astype(int)).max())
        exact += d == 0
        maxdiff = max(maxdiff, d)
    print(f"\n[resize parity {label}] {exact}/{len(expect)} resizes bit-exact vs Pillow {Image.__version__}, "
          f"max diff {maxdiff}")
    assert exact == len(expect)


@pytest.mark.parametrize("label,c_order,ref_order", ORDERS, ids=[o[0] for o in ORDERS])
def test_resize_with_pad_matches_openpi(tool, tmp_path, base_seed, label, c_order, ref_order):
    rng = np.random.default_rng(base_seed + 1)
    sizes, _ = _pairs(rng)
    sizes += [(480, 640), (640, 480), (240, 320), (1, 224), (224, 1), (2, 224), (225, 224), (224, 225), (1, 1000)]
    tensors, meta, expect, errors = {}, {}, {}, {}
    for i, (h, w) in enumerate(sizes):
        img = _image(rng, h, w, 3, ["random", "extremes", "gradient"][i % 3])
        name = f"img{i}"
        tensors[name] = img
        meta[f"{name}.order"] = c_order
        try:
            expect[name] = policy_ref.resize_with_pad(img, order=ref_order)
        except ValueError as e:  # Pillow refuses a 0-sized side (very elongated images)
            errors[name] = str(e)
    st.save(str(tmp_path / "in.safetensors"), tensors, metadata=meta)
    run(tool, "resize", tmp_path / "in.safetensors", tmp_path / "out.safetensors")
    got, gmeta = st.load(str(tmp_path / "out.safetensors"))
    for name in errors:
        assert "too elongated" in gmeta[f"{name}.error"], (tensors[name].shape, gmeta.get(f"{name}.error"))
    exact = 0
    for name, ref in expect.items():
        assert name in got, gmeta.get(f"{name}.error")
        assert got[name].shape == (224, 224, 3)
        d = int(np.abs(got[name].astype(int) - ref.astype(int)).max())
        exact += d == 0
        assert d == 0, f"{name}: {tensors[name].shape}: max diff {d}"
    noop = "img%d" % sizes.index((224, 224))
    assert np.array_equal(got[noop], tensors[noop])
    print(f"\n[resize_with_pad parity {label}] {exact}/{len(expect)} images bit-exact, "
          f"{len(errors)} refused as Pillow does")


def test_resize_with_pad_matches_openpi_client(tool, tmp_path, base_seed):
    """Against openpi_client.image_tools.resize_with_pad itself when the package is installed
    (it uses the installed Pillow, so the C side uses that Pillow's pass order)."""
    image_tools = pytest.importorskip("openpi_client.image_tools")
    order = "13" if policy_ref.PILLOW_MAJOR >= 13 else "11"
    if 12 <= policy_ref.PILLOW_MAJOR < 13:
        pytest.skip("Pillow 12.x: pass order differs from both modes for very tall images")
    rng = np.random.default_rng(base_seed + 2)
    sizes = [(480, 640), (640, 480), (300, 100), (100, 300), (224, 224), (720, 1280), (96, 96), (1, 3), (37, 901)]
    sizes += [(int(rng.integers(1, 800)), int(rng.integers(1, 800))) for _ in range(30)]
    tensors, meta, expect = {}, {}, {}
    for i, (h, w) in enumerate(sizes):
        img = _image(rng, h, w, 3, ["random", "extremes", "gradient"][i % 3])
        try:
            ref = image_tools.resize_with_pad(img[None], 224, 224)[0]
        except ValueError:
            continue
        tensors[f"img{i}"], meta[f"img{i}.order"], expect[f"img{i}"] = img, order, ref
    st.save(str(tmp_path / "in.safetensors"), tensors, metadata=meta)
    run(tool, "resize", tmp_path / "in.safetensors", tmp_path / "out.safetensors")
    got, _ = st.load(str(tmp_path / "out.safetensors"))
    exact = sum(np.array_equal(got[k], v) for k, v in expect.items())
    print(f"\n[resize_with_pad vs openpi_client] {exact}/{len(expect)} bit-exact (Pillow {Image.__version__})")
    assert exact == len(expect)
