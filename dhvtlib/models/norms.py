"""The channel norms of DHVT's convolutional parts and of the CNN baselines, as the official code's GPUs computed
them on any number of devices: SplitBatchNorm2d (per-GPU statistics, "virtual GPUs"), AllReduceSyncBatchNorm2d
(SyncBatchNorm on any backend) and `make_norm2d` (BatchNorm, LayerNorm or none: Table 11). Same state_dict as
BatchNorm2d."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import LayerNorm2d, register_notrace_module
from torch import nn

__all__ = ["SplitBatchNorm2d", "AllReduceSyncBatchNorm2d", "make_norm2d", "NORMS_2D"]

NORMS_2D = ("bn", "ln", "none")


class _TraceableBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose input-rank check is skipped while torch.fx traces it (a subclass outside torch.nn is not
    a leaf of torch.fx, and the check branches on the traced rank); it runs on real tensors."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if not isinstance(input, torch.fx.Proxy):
            super()._check_input_dim(input)


@register_notrace_module  # a leaf of timm's fx tracing: its per-group branch runs on real tensors
class SplitBatchNorm2d(_TraceableBatchNorm2d):
    """BatchNorm2d whose training statistics are computed per group of `num_splits` interleaved sub-batches, as
    `num_splits` GPUs with plain (unsynchronised) BatchNorm would compute them: group g is items g, g + G, g + 2G, ...
    of the batch, which are exactly the images the official sampler (rank::world_size) gives GPU g at each step.

    One native batch_norm over a [B/G, G*C, H, W] view (no Python loop; a free view for NCHW-contiguous input).
    The running statistics are group 0's: under DDP (broadcast_buffers) every GPU runs on rank 0's buffers, and
    rank 0's model is the one the official code saves and evaluates. num_splits = 1 (the default) is BatchNorm2d.
    The state_dict is BatchNorm2d's.
    """

    def __init__(self, num_features: int, num_splits: int = 1, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.num_splits
        if g == 1 or not self.training:
            return super().forward(x)
        B, C, H, W = x.shape
        if B % g:
            raise ValueError(f"a batch of {B} images cannot be split into {g} per-GPU groups; use a batch size "
                             f"divisible by {g} (or set the groups with dhvtlib.run.build.set_bn_splits).")
        factor = self.momentum
        stats = self.track_running_stats
        if stats:
            self.num_batches_tracked.add_(1)
            if factor is None:
                factor = 1.0 / float(self.num_batches_tracked)
        mean = self.running_mean.repeat(g) if stats else None
        var = self.running_var.repeat(g) if stats else None
        w = self.weight.repeat(g) if self.weight is not None else None
        b = self.bias.repeat(g) if self.bias is not None else None
        y = F.batch_norm(x.reshape(B // g, g * C, H, W), mean, var, w, b, True, factor or 0.0, self.eps)
        if stats:
            with torch.no_grad():
                self.running_mean.copy_(mean[:C])
                self.running_var.copy_(var[:C])
        return y.reshape(B, C, H, W)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", num_splits={self.num_splits}" if self.num_splits != 1 else "")


@register_notrace_module
class AllReduceSyncBatchNorm2d(_TraceableBatchNorm2d):
    """SyncBatchNorm on any process-group backend (torch's needs CUDA): in training under an initialised process
    group of several processes, the statistics are those of every process's batch together (two differentiable
    all_reduces: the mean, then the centred sum of squares); the running variance is unbiased over the global
    count, as SyncBatchNorm's. Otherwise it is BatchNorm2d; same state_dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # only across processes (not in every torch build)

        xf = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
        C = x.shape[1]
        local = torch.cat([xf.sum((0, 2, 3)), xf.new_full((1,), x.numel() // C)])
        sums = all_reduce(local)
        count = sums[C]
        mean = sums[:C] / count
        var = all_reduce(((xf - mean[:, None, None]) ** 2).sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * count / (count - 1))
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return torch.addcmul(shift[:, None, None], xf, scale[:, None, None]).to(x.dtype)


def make_norm2d(kind: str, channels: int, split: bool = False) -> nn.Module:
    """Channel norm for [B, C, H, W] maps: 'bn' (BatchNorm2d, the official choice; with `split` a SplitBatchNorm2d,
    which is BatchNorm2d until its groups are set), 'ln' (LayerNorm over C, Table 11's alternative) or 'none'
    (identity, for Table 8's BN-free FFN forms)."""
    if kind == "bn":
        return SplitBatchNorm2d(channels) if split else nn.BatchNorm2d(channels)
    if kind == "ln":
        return LayerNorm2d(channels, eps=1e-6)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm {kind!r} is not supported; use one of {NORMS_2D}.")
