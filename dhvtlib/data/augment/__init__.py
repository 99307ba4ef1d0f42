"""DeiT's training augmentation as batched tensor ops on the training device, and the PIL pipeline for files.

`BatchAugment` reproduces, for uint8 image batches [B, C, H, W] already in memory (CIFAR, Fashion-MNIST):
RandomCrop(padding=4) or RandomResizedCrop -> horizontal flip -> timm RandAugment -> ToTensor + Normalize ->
timm RandomErasing (mode 'pixel'), with per-sample randomness and no Python loop over the batch (the loops run over
RandAugment's op types). Every random number is drawn on the CPU from the caller's `torch.Generator` (in a fixed
order that does not depend on the data), then moved to the images' device, so the parameters depend only on the
generator state. The arithmetic replays Pillow's C code (LUTs, truncations, its bicubic with a = -1, edge clamping
and fill for the geometric ops, coordinates in float64), so every op equals timm's PIL op bitwise, except Rotate at
~1e-5 of pixels (one grey level off there: it interpolates in float32 for speed, Pillow in double).

Choices and deviations from timm + Pillow (deliberate):
- Geometric ops resample bicubic by default: DeiT passes train_interpolation='bicubic' to create_transform, which
  fixes RandAugment's resample to BICUBIC (timm's random bilinear/bicubic choice applies only without it; pass
  interpolation='random' for that). Fill = timm's img_mean, round(255 * mean) of the mean given here; DeiT
  normalises with the ImageNet mean, giving (124, 116, 104): pass fill=... to pin it independently of `mean`.
- RandomResizedCrop: timm's get_params vectorised, resampled bicubic as DeiT (timm's
  RandomResizedCropAndInterpolation with interpolation='bicubic'), but with torch's bicubic (a = -0.75, as
  torchvision's tensor resize; Pillow's has a = -0.5) through `grid_sample`, crop-then-resize geometry as
  torchvision, no antialiasing (Pillow antialiases when shrinking). `rrc_interpolation='bilinear'` is the former
  behaviour.
- Random numbers come from torch, not Python's `random`, so no output is bitwise timm's for a seed; the
  distributions and the per-op arithmetic are the same. Erasing noise is drawn only for the erased pixels.
- PosterizeIncreasing at magnitude 10 asks for 0 bits: a black image here (as older Pillow gave); newer Pillow
  (`ImageOps.posterize` accepting only 1..8 bits, as the installed one may) raises ValueError, which
  `build_pil_transform` patches around (`pil_posterize`).
- Rotate's cos/sin are rounded to 15 decimals with torch.round (Python's round may differ by one ulp).
- RandAugment 't' (weighted / 3-augment) transform sets are not supported.
- Rotate interpolates in float32 (see above); on MPS (no float64) everything is float32 (more one-level
  differences); on a GPU, isolated pixels may differ from the CPU by one level (float rounding before truncation).

`build_pil_transform` builds DeiT's `build_transform` (timm `create_transform`) for file data sets.
"""
# Training path: batch.py (BatchAugment and the draws it samples) -> crops.py, randaugment.py (config string,
# levels), geometric.py and color.py (the ops, replaying Pillow), with images.py (batch conventions shared by all
# of them, and normalize_batch). File data sets: pil.py (build_pil_transform). The tests' one-op replay (apply_op)
# is tests/augment_replay.py.
from .batch import BatchAugment
from .crops import resize_center_crop
from .images import normalize_batch
from .pil import build_pil_transform

__all__ = ["BatchAugment", "build_pil_transform", "normalize_batch", "resize_center_crop"]
