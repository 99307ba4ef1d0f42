"""Batched DeiT augmentation (dhvtlib.data.augment) against timm / Pillow / torchvision, image by image.

Tolerance: every op is compared with timm's PIL op at max abs diff <= 1 grey level, and at most 0.1 % of values may
differ at all. In practice they are bitwise equal (the ops replay Pillow's C arithmetic), except Rotate, which
interpolates in float32 where Pillow uses double: ~1e-5 of its pixels are one level off.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from timm.data import auto_augment as aa

from dhvtlib.data.augment import BatchAugment, build_pil_transform, normalize_batch
from dhvtlib.data.augment.crops import pad_crop, resized_crop
from dhvtlib.data.augment.pil import pil_posterize
from dhvtlib.data.augment.randaugment import (RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, level_to_arg,
                                             parse_rand_augment)
from augment_replay import apply_op

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


@pytest.fixture(autouse=True)
def _one_thread():
    """Hundreds of tiny ops per batch: one intra-op thread avoids OpenMP barrier stalls on a busy 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _stats(c: int):
    return (CIFAR_MEAN, CIFAR_STD) if c == 3 else (FMNIST_MEAN, FMNIST_STD)


def _images(c: int, n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random uint8 images plus hard cases: few grey levels, constant, narrow range, smooth gradient."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (max(n, 5), size, size, c), dtype=np.uint8)
    a[1] = (a[1] // 64) * 20 + 30
    a[2] = 77
    a[3] = a[3] // 4 + 100
    yy, xx = np.mgrid[0:size, 0:size]
    a[4] = ((np.sin(xx / 3.0) + np.cos(yy / 5.0)) * 60 + 128).astype(np.uint8)[..., None]
    a = a[:n]
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


def _to_pil(x: torch.Tensor) -> Image.Image:
    a = x.permute(1, 2, 0).numpy().astype(np.uint8)
    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)


def _from_pil(im: Image.Image) -> torch.Tensor:
    a = np.asarray(im, dtype=np.float32)
    return torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy())


def _timm_op(name, img, arg, fill, interp):
    fn = pil_posterize if name.startswith("Posterize") else aa.NAME_TO_OP[name]
    resample = Image.BICUBIC if interp == "bicubic" else Image.BILINEAR
    return fn(img, *(() if arg is None else (arg,)), fillcolor=fill, resample=resample)


def _assert_close_grey(ours: torch.Tensor, ref: torch.Tensor) -> None:
    d = (ours - ref).abs()
    assert d.max().item() <= 1, f"max diff {d.max().item()}"
    assert (d > 0).float().mean().item() <= 1e-3


# -------------------------------------------------------------------------------------------- per-op vs timm

COLOR_CASES = {
    "AutoContrast": [None], "Equalize": [None], "Invert": [None], "Posterize": [0, 1, 2, 4, 8],
    "Solarize": [0, 50, 128, 256], "SolarizeAdd": [0, 30, 110], "Color": [0.1, 0.55, 1.0, 1.9],
    "Contrast": [0.1, 0.55, 1.0, 1.9], "Brightness": [0.1, 0.55, 1.9], "Sharpness": [0.1, 0.55, 1.9],
}
GEO_CASES = {"Rotate": [-27.3, 13.5, 30.0], "ShearX": [-0.3, 0.17], "ShearY": [-0.27, 0.3],
             "TranslateXRel": [-0.405, 0.2], "TranslateYRel": [-0.45, 0.33]}


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name", list(COLOR_CASES))
def test_color_ops_match_timm_pil(name, c):
    x = _images(c)
    for arg in COLOR_CASES[name]:
        ours = apply_op(name, x, arg)
        ref = torch.stack([_from_pil(_timm_op(name, _to_pil(xi), arg, None, "bicubic")) for xi in x])
        _assert_close_grey(ours, ref)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
@pytest.mark.parametrize("name", list(GEO_CASES))
def test_geometric_ops_match_timm_pil(name, interp, c):
    """Whole image, borders and fill included (timm's img_mean fill)."""
    x = _images(c, n=5, size=28 if c == 1 else 32)
    fill = tuple(min(255, round(255 * m)) for m in _stats(c)[0])
    for arg in GEO_CASES[name]:
        ours = apply_op(name, x, torch.full((len(x),), arg, dtype=torch.float64), fill=fill, interpolation=interp)
        ref = torch.stack([_from_pil(_timm_op(name, _to_pil(xi), arg, fill, interp)) for xi in x])
        _assert_close_grey(ours, ref)


def test_per_sample_arguments():
    x = _images(3, n=4)
    args = torch.tensor([-30.0, -5.0, 0.0, 22.0], dtype=torch.float64)
    ours = apply_op("Rotate", x, args, fill=(125, 123, 114))
    for i in range(4):
        ref = _from_pil(aa.rotate(_to_pil(x[i]), args[i].item(), fillcolor=(125, 123, 114), resample=Image.BICUBIC))
        _assert_close_grey(ours[i], ref)


def testpil_posterize_zero_bits_is_black():
    img = _to_pil(_images(3)[0])
    assert np.asarray(pil_posterize(img, 0)).max() == 0
    with pytest.raises(ValueError):  # why pil_posterize exists (Pillow >= 11)
        aa.posterize(img, 0)


@pytest.mark.parametrize("name", sorted(set(RAND_TRANSFORMS + RAND_INCREASING_TRANSFORMS)))
def test_level_to_arg_matches_timm(name, monkeypatch):
    fn = aa.LEVEL_TO_ARG[name]
    levels = [0.0, 0.3, 2.5, 8.1, 9.0, 9.99, 10.0]
    for negate in (False, True):
        monkeypatch.setattr(aa.random, "random", lambda: 1.0 if negate else 0.0)
        ref = [fn(lv, {"translate_pct": 0.45})[0] if fn else 0.0 for lv in levels]
        ours = level_to_arg(name, torch.tensor(levels, dtype=torch.float64), torch.full((7,), negate))
        assert ours.tolist() == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("cfg", ["rand-m9-mstd0.5-inc1", "rand-m7-n3-mstd1-p0.3", "rand-m12-mmax15-mstd200",
                                 "rand-m9-mstd0.5"])
def test_parse_matches_timm(cfg):
    ra = aa.rand_augment_transform(cfg, {"translate_const": 14, "img_mean": (125, 123, 114)})
    ours = parse_rand_augment(cfg)
    op0 = ra.ops[0]
    assert ours.num_layers == ra.num_layers
    assert ours.ops == tuple(o.name for o in ra.ops)
    assert (ours.magnitude, ours.prob, ours.magnitude_std) == (op0.magnitude, op0.prob, op0.magnitude_std)
    assert ours.upper_bound == (op0.magnitude_max or 10)


def test_parse_errors():
    for bad in ("augmix-m5", "rand-m9-q3", "rand-tweights", "rand-m9.5"):
        with pytest.raises(ValueError):
            parse_rand_augment(bad)


# ------------------------------------------------------------------------------------------------ crop, erase

def test_pad_crop_equals_torchvision_random_crop():
    x = _images(3, n=5)
    top, left = torch.tensor([0, 8, 3, 8, 5]), torch.tensor([0, 8, 6, 1, 4])
    ours = pad_crop(x, top, left, 32, 4)
    for i in range(5):
        ref = TF.crop(TF.pad(x[i], [4], fill=0), int(top[i]), int(left[i]), 32, 32)
        assert torch.equal(ours[i], ref)


def test_resized_crop_matches_torchvision():
    """rrc resampling = torchvision's tensor resized_crop (bilinear, antialias=False), rounded to uint8 values."""
    x = _images(3, n=4)
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 10, 14], [10, 2, 20, 9], [0, 20, 31, 12]])
    ours = resized_crop(x, boxes, 32)
    for i, (t, l, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[i].float(), t, l, h, w, [32, 32], antialias=False).round().clamp(0, 255)
        assert (ours[i] - ref).abs().max() <= 1 and (ours[i] != ref).float().mean() < 1e-3
    assert torch.equal(ours[0], x[0].float())


def test_resized_crop_bicubic_is_torchvisions_bicubic():
    """DeiT's RandomResizedCrop resamples bicubic: inside the box the taps equal torchvision's
    tensor bicubic (a = -0.75, antialias=False); at the box edge ours may read one pixel beyond it."""
    x = _images(3, n=3)
    boxes = torch.tensor([[0, 0, 32, 32], [4, 6, 16, 12], [8, 2, 20, 24]])
    ours = resized_crop(x, boxes, 64, "bicubic")
    for i, (t, l, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[i].float(), t, l, h, w, [64, 64], interpolation=TF.InterpolationMode.BICUBIC,
                              antialias=False).round().clamp(0, 255)
        inner = (slice(None), slice(8, -8), slice(8, -8))
        assert (ours[i][inner] - ref[inner]).abs().max() <= 1, i
    aug = BatchAugment(64, CIFAR_MEAN, CIFAR_STD, crop="rrc")
    assert aug.rrc_interpolation == "bicubic"  # DeiT's train_interpolation


def test_rrc_boxes_and_fallback():
    g = torch.Generator().manual_seed(0)
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD, crop="rrc", rand_augment=None, random_erasing=0)
    p = aug.sample(4000, 3, 32, 32, g)
    i, j, h, w = p.crop.unbind(1)
    assert (i >= 0).all() and (j >= 0).all() and (i + h <= 32).all() and (j + w <= 32).all()
    assert (h >= 1).all() and (w >= 1).all()
    area = (h * w).double() / 1024
    assert area.min() > 0.05 and area.max() <= 1.0
    assert len(set(i.tolist())) > 10 and len(set(h.tolist())) > 10
    fallback = BatchAugment(32, CIFAR_MEAN, CIFAR_STD, crop="rrc", rrc_scale=(2.0, 3.0), rand_augment=None)
    assert fallback.sample(3, 3, 32, 32, g).crop.tolist() == [[0, 0, 32, 32]] * 3


def test_random_erasing_statistics():
    g = torch.Generator().manual_seed(1)
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD, crop=None, rand_augment=None, hflip=0.0)
    x = torch.full((3000, 3, 32, 32), 100, dtype=torch.uint8)
    p = aug.sample(3000, 3, 32, 32, g)
    out = aug.apply(x, p)
    assert abs(p.erase.float().mean().item() - 0.25) < 0.03
    base = normalize_batch(x[:1], CIFAR_MEAN, CIFAR_STD)
    changed = (out != base).any(dim=1)  # [B, 32, 32]
    t, l, h, w = p.erase_box.unbind(1)
    assert torch.equal(changed.flatten(1).sum(1), torch.where(p.erase, h * w, 0))
    area = (h * w)[p.erase].double() / 1024
    assert area.min() >= 0.015 and area.max() <= 1 / 3 + 0.03
    vals = out[changed[:, None].expand_as(out)]
    assert abs(vals.mean().item()) < 0.02 and abs(vals.std().item() - 1) < 0.02


# ------------------------------------------------------------------------------------------ RandAugment stats

def test_rand_augment_statistics():
    g = torch.Generator().manual_seed(2)
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD, random_erasing=0)
    p = aug.sample(30000, 3, 32, 32, g)
    assert len(p.layers) == 2
    for layer in p.layers:
        freq = torch.bincount(layer.op, minlength=15).double() / 30000
        assert (freq - 1 / 15).abs().max() < 0.01
        assert abs(layer.applied.double().mean().item() - 0.5) < 0.01
        mag = layer.magnitude
        assert abs(mag.mean().item() - 9.0) < 0.02 and abs(mag.std().item() - 0.5) < 0.02
        assert mag.max().item() == 10.0 and (mag == 10.0).double().mean().item() == pytest.approx(0.0228, abs=0.004)
        rot = layer.arg[layer.op == RAND_INCREASING_TRANSFORMS.index("Rotate")]
        assert abs((rot < 0).double().mean().item() - 0.5) < 0.05 and rot.abs().max() <= 30
    assert not torch.equal(p.layers[0].op, p.layers[1].op)


# ----------------------------------------------------------------------------------- the whole BatchAugment

@pytest.mark.parametrize("c,size,crop", [(3, 32, "pad"), (1, 28, "pad"), (3, 32, "rrc"), (1, 28, "rrc"),
                                         (3, 32, None)])
def test_shapes_dtypes_determinism(c, size, crop):
    mean, std = _stats(c)
    aug = BatchAugment(size, mean, std, crop=crop)
    x = _images(c, n=16, size=size)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    d = aug(x, torch.Generator().manual_seed(6))
    assert a.shape == (16, c, size, size) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, d)


def test_rrc_upscales_small_sources():
    """train.py's in-memory path at img_size > 32: 32 px sources, rrc to a larger size (here 64, bilinear)."""
    out = BatchAugment(64, CIFAR_MEAN, CIFAR_STD, crop="rrc")(_images(3, n=4), torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 64, 64) and torch.isfinite(out).all()


def test_params_vary_across_batch():
    p = BatchAugment(32, CIFAR_MEAN, CIFAR_STD).sample(256, 3, 32, 32, torch.Generator().manual_seed(0))
    assert len(set(p.crop[:, 0].tolist())) == 9 and len(set(p.crop[:, 1].tolist())) == 9
    assert 0.3 < p.flip.float().mean() < 0.7
    assert len(set(p.layers[0].op.tolist())) == 15 and len(set(p.layers[0].magnitude.tolist())) > 100


@pytest.mark.parametrize("c,interp", [(1, "bicubic"), (3, "bicubic"), (3, "random")])
def test_batch_equals_pil_replay(c, interp):
    """BatchAugment == the same sampled parameters replayed image by image through torchvision + timm's PIL ops +
    ToTensor/Normalize + the erasing box: checks the grouping, ordering and flip/crop plumbing end to end."""
    mean, std = _stats(c)
    size = 32
    aug = BatchAugment(size, mean, std, random_erasing=0.5, interpolation=interp)
    x = _images(c, n=48, size=size, seed=3)
    p = aug.sample(48, c, size, size, torch.Generator().manual_seed(11))
    out = aug.apply(x, p)
    ops = aug.ra.ops
    fill = tuple(int(f) for f in aug.fill)
    noise_at, refs = 0, []
    for i in range(48):
        img = TF.crop(TF.pad(x[i], [4], fill=0), int(p.crop[i, 0]), int(p.crop[i, 1]), size, size)
        if p.flip[i]:
            img = img.flip(-1)
        im = _to_pil(img)
        for layer in p.layers:
            if layer.applied[i]:
                name = ops[layer.op[i]]
                arg = None if name in ("AutoContrast", "Equalize", "Invert") else layer.arg[i].item()
                if name.startswith(("Posterize", "Solarize")):
                    arg = int(arg)
                bicubic = interp == "bicubic" or bool(layer.bicubic[i])
                im = _timm_op(name, im, arg, fill, "bicubic" if bicubic else "bilinear")
        ref = TF.normalize(TF.to_tensor(im), mean, std)
        if p.erase[i]:
            t, l, h, w = p.erase_box[i].tolist()
            n = c * h * w
            ref[:, t:t + h, l:l + w] = p.noise[noise_at:noise_at + n].view(c, h, w)
            noise_at += n
        refs.append(ref)
    assert noise_at == p.noise.numel()
    d = (out - torch.stack(refs)).abs() * 255 * torch.tensor(std).view(1, c, 1, 1)  # in grey levels
    assert d.max().item() <= 1 + 1e-3 and (d > 1e-3).float().mean().item() <= 1e-3


def test_no_augmentation_is_normalisation():
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD, crop=None, hflip=0.0, rand_augment=None, random_erasing=0.0)
    x = _images(3)
    assert torch.equal(aug(x, torch.Generator()), normalize_batch(x, CIFAR_MEAN, CIFAR_STD))


@pytest.mark.parametrize("c", [1, 3])
def test_normalize_batch_matches_torchvision(c):
    mean, std = _stats(c)
    x = _images(c, n=3)
    ref = torch.stack([TF.normalize(TF.to_tensor(_to_pil(xi)), mean, std) for xi in x])
    assert torch.equal(normalize_batch(x, mean, std), ref)


def test_errors():
    x = _images(3, n=2)
    with pytest.raises(ValueError, match="crop"):
        BatchAugment(32, CIFAR_MEAN, CIFAR_STD, crop="center")
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment(32, CIFAR_MEAN, CIFAR_STD)(x.float(), torch.Generator())
    with pytest.raises(ValueError, match="channels"):
        BatchAugment(32, FMNIST_MEAN, FMNIST_STD)(x, torch.Generator())
    with pytest.raises(ValueError, match="crop=None"):
        BatchAugment(28, CIFAR_MEAN, CIFAR_STD, crop=None)(x, torch.Generator())
    with pytest.raises(ValueError, match="mean"):
        normalize_batch(x, FMNIST_MEAN, FMNIST_STD)


# ------------------------------------------------------------------------------------------------- PIL path

@pytest.mark.parametrize("size", [32, 224])
def test_build_pil_transform(size):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size + 8, size + 20, 3), dtype=np.uint8))
    train = build_pil_transform(size, CIFAR_MEAN, CIFAR_STD, True)
    names = [type(t).__name__ for t in train.transforms[:3]]
    assert names == (["Resize", "CenterCrop", "RandomCrop"] if size <= 32 else
                     ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment"])
    ra = [t for t in train.transforms if isinstance(t, aa.RandAugment)][0]
    assert all(op.aug_fn is pil_posterize for op in ra.ops if op.name.startswith("Posterize"))
    assert not any(type(t).__name__ == "ColorJitter" for t in train.transforms)  # timm drops it under RandAugment
    square = img.crop((0, 0, size, size))
    for _ in range(3):
        t = train(square)
        assert t.shape == (3, size, size) and t.dtype == torch.float32
    ev = build_pil_transform(size, CIFAR_MEAN, CIFAR_STD, False)(img if size > 32 else square)
    assert ev.shape == (3, size, size)
    if size <= 32:  # images already img_size: DeiT's ToTensor + Normalize bitwise (the resize is a no-op)
        assert torch.equal(build_pil_transform(size, CIFAR_MEAN, CIFAR_STD, False)(square),
                           TF.normalize(TF.to_tensor(square), CIFAR_MEAN, CIFAR_STD))
        # any other size: shorter side to img_size (bicubic) and the centre, in training and in evaluation
        for im in (img, Image.fromarray(rng.integers(0, 256, (20, 27, 3), dtype=np.uint8))):
            assert build_pil_transform(size, CIFAR_MEAN, CIFAR_STD, False)(im).shape == (3, size, size)
            assert train(im).shape == (3, size, size)


def test_build_pil_transform_greyscale():
    img = _to_pil(_images(1, size=28)[0])
    t = build_pil_transform(28, FMNIST_MEAN, FMNIST_STD, True)(img)
    assert t.shape == (1, 28, 28)
