"""DHVT building blocks: SOPE, HI-MHSA (head tokens), DAFF, the pre-norm block.

Every module computes exactly what the official code's module computes (ConvPatchEmbed, HI_Attention, DAFF,
DHVT_Block) with the default arguments; the other arguments are the paper's ablations (Tables 5-11, appendix
B.2.2) or the paper's own form of an equation.
Parameter names follow the official state_dict, so official checkpoints load with strict=True.

Shapes: B batch, C width, h heads, d = C/h, P patch, N_p patch tokens, N = N_p + 1 (class token first).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, register_notrace_function
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .norms import make_norm2d

__all__ = [
    "Affine", "SOPE", "LinearPatchEmbed", "Attention", "DAFF", "Mlp", "Block", "SOPE_PATCH_SIZES", "ATTN_IMPLS",
    "DAFF_LAYOUTS",
]

SOPE_PATCH_SIZES = (2, 4, 8, 16)
ATTN_IMPLS = ("auto", "sdpa", "explicit")
DAFF_LAYOUTS = ("auto", "tokens", "channels_last", "nchw")


def _cpu_low_precision(x: torch.Tensor) -> bool:
    """x is on the CPU and computed in bf16/fp16 (its dtype, or the CPU autocast dtype when autocast is on)."""
    if x.device.type != "cpu":
        return False
    if x.dtype in (torch.bfloat16, torch.float16):
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16)


def check_sope_patch_size(patch_size: int) -> None:
    """SOPE halves the resolution log2(P) times: P must be one of SOPE_PATCH_SIZES."""
    if patch_size not in SOPE_PATCH_SIZES:
        raise ValueError(f"patch_size {patch_size} is not supported by SOPE; use one of {SOPE_PATCH_SIZES}.")


def check_num_heads(dim: int, num_heads: int) -> None:
    """The heads split the width into equal groups: num_heads must divide it."""
    if not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
        raise ValueError(f"num_heads {num_heads!r} must be a positive integer dividing embed_dim {dim}.")


# The runtime choices below (the grid side of a token count, the kernel and layout by device and precision) are
# leaves of fx tracing (timm's register_notrace_function and torch.fx.wrap): a traced model calls them on the real
# tensors, so it keeps the checks and the choices of the eager model.
@register_notrace_function
def _grid_side(num_patches: int) -> int:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"{num_patches} patch tokens do not form a square grid; DHVT needs square images.")
    return side


@register_notrace_function
def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, drop: float, impl: str) -> torch.Tensor:
    """softmax(q k^T * scale) v with dropout `drop`, by the kernel `impl` picks (see Attention)."""
    if impl == "explicit" or (impl == "auto" and _cpu_low_precision(q)):
        attn = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
        return F.dropout(attn, drop) @ v
    return F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=scale)


def _daff_nchw(y: torch.Tensor, layout: str, split: bool) -> bool:
    """Whether DAFF's map form copies its map to NCHW: `layout` as `DAFF._layout` decided it, or under torch.fx
    DAFF's own setting ('auto': NCHW for split BatchNorms in training and under CPU bf16/fp16, whose tokens form a
    traced graph does not take; 'tokens' runs on the channels_last view there)."""
    if layout == "auto":
        return split or _cpu_low_precision(y)
    return layout == "nchw"


@register_notrace_function
def _daff_map(y: torch.Tensor, layout: str, split: bool) -> torch.Tensor:
    """DAFF's [B, C, s, s] map in the layout `layout` picks: an NCHW copy or the channels_last view itself."""
    return y.contiguous() if _daff_nchw(y, layout, split) else y


for _leaf in ("_grid_side", "_attend", "_daff_map"):
    torch.fx.wrap(_leaf)


class Affine(nn.Module):
    """Per-channel scale and shift, alpha * x + beta, on [B, ch, H, W] (SOPE's pre- and post-affine)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class ConvNorm(nn.Sequential):
    """3x3 stride-2 conv + norm: the official `conv3x3` (keys `.0` conv, `.1` norm)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "bn", bias: bool = False):
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=bias), make_norm2d(norm, out_ch))


class SOPE(nn.Module):
    """Sequential Overlapping Patch Embedding (official `ConvPatchEmbed`).

    [B, in_chans, H, W] -> pre-affine -> log2(P) x (conv3x3/s2 + norm, GELU between) -> post-affine
    -> [B, N_p, C].  Channel schedule: C / 2**(k-1-i) after stage i (P=16: C/8, C/4, C/2, C).
    As in the official code there is no GELU after the last stage for P >= 4, but there is one for P = 2;
    `last_act=True` gives the paper's Eq. 2 (GELU after every stage).
    """

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 192,
                 norm: str = "bn", affine: bool = True, last_act: bool | None = None, conv_bias: bool = False):
        super().__init__()
        check_sope_patch_size(patch_size)
        stages = int(math.log2(patch_size))
        if embed_dim % 2 ** (stages - 1):
            raise ValueError(f"embed_dim {embed_dim} must be divisible by {2 ** (stages - 1)} for SOPE with "
                             f"patch_size {patch_size} (its first stage has embed_dim/{2 ** (stages - 1)} channels).")
        if last_act is None:
            last_act = patch_size == 2  # the official code's quirk (the paper's Eq. 2 has GELU in every stage)
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        widths = [in_chans] + [embed_dim // 2 ** (stages - 1 - i) for i in range(stages)]
        layers: list[nn.Module] = []
        for i in range(stages):
            layers.append(ConvNorm(widths[i], widths[i + 1], norm=norm, bias=conv_bias))
            if i < stages - 1 or last_act:
                layers.append(nn.GELU())  # one module per use (captum hooks need distinct modules)
        self.proj = nn.Sequential(*layers)
        self.pre_affine = Affine(in_chans) if affine else nn.Identity()
        self.post_affine = Affine(embed_dim) if affine else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.post_affine(self.proj(self.pre_affine(x)))  # [B, C, H/P, W/P]
        return x.permute(0, 2, 3, 1).flatten(1, 2)  # [B, N_p, C]


class LinearPatchEmbed(nn.Module):
    """ViT's non-overlapping linear patch embedding, in timm's layout (`proj` is a PxP stride-P conv)."""

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 192):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1).flatten(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention; with `head_tokens=True` it is HI-MHSA (official `HI_Attention`).

    Head tokens: split [B, N, C] into h channel groups, average each over all N tokens -> [B, h, d],
    shared Linear(d -> C) -> [B, h, C], group-wise LayerNorm(d) over [B, h, h, d], GELU, + E_head (`pos_embed`,
    [1, h, C]); append after the N tokens, attend over N + h tokens, project, then add the mean of the h projected
    head tokens to the class token and drop them. `ht_norm=False` gives the paper's Eq. 6 (no LayerNorm).
    `impl` picks the kernel (the same maths): 'sdpa' (scaled_dot_product_attention: flash/efficient on CUDA, the
    fused CPU kernel, fastest in fp32 on a CPU), 'explicit' (the official `q @ k^T -> softmax -> @ v`; on a CPU in
    bf16 its backward is ~10x cheaper than the CPU flash kernel's, and its forward at N = 65 tokens 2.7x cheaper:
    51 vs 140 ms per DHVT-T/4 batch of 128 on an AVX512-BF16 CPU) or 'auto' (explicit on a CPU in bf16/fp16, sdpa
    otherwise). With `keep_attn` set the explicit path runs and the softmax map [B, h, N+h, N+h]
    (head tokens last) is stored in `self.attn_map`.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, head_tokens: bool = False, ht_norm: bool = True, impl: str = "auto"):
        super().__init__()
        check_num_heads(dim, num_heads)
        if impl not in ATTN_IMPLS:
            raise ValueError(f"attention impl {impl!r} is not supported; use one of {ATTN_IMPLS}.")
        self.impl = impl
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.head_tokens = head_tokens
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if head_tokens:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_heads, dim))  # E_head, official name
            self.ht_proj = nn.Linear(self.head_dim, dim)
            self.ht_norm = nn.LayerNorm(self.head_dim) if ht_norm else nn.Identity()
            self.ht_act = nn.GELU()
        self.keep_attn = False
        self.attn_map: torch.Tensor | None = None

    def make_head_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, h, C]."""
        B, N, C = x.shape
        h = self.num_heads
        groups = x.reshape(B, N, h, C // h).transpose(1, 2).mean(dim=2)  # [B, h, d]
        t = self.ht_proj(groups).reshape(B, h, h, C // h)  # [B, h, h, d]
        t = self.ht_act(self.ht_norm(t)).flatten(2)  # [B, h, C]
        return t + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        if self.head_tokens:
            x = torch.cat([x, self.make_head_tokens(x)], dim=1)  # [B, N + h, C]
        q, k, v = self.qkv(x).reshape(B, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        if self.keep_attn:
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
            self.attn_map = attn.detach()
            out = F.dropout(attn, drop) @ v
        else:
            out = _attend(q, k, v, self.scale, drop, self.impl)
        x = self.proj(out.transpose(1, 2).reshape(B, -1, C))
        if self.head_tokens:  # merge: cls += mean(head tokens); head tokens are dropped
            x, ht = x[:, :N], x[:, N:]
            x = torch.cat([x[:, :1] + ht.mean(dim=1, keepdim=True), x[:, 1:]], dim=1)
        return self.proj_drop(x)


class DAFF(nn.Module):
    """Dynamic Aggregation Feed-Forward (official `DAFF`), plus the paper's ablation forms.

    Patch tokens as a [B, C, s, s] map: conv1 1x1 -> norm -> GELU = s0; conv2 3x3 depthwise -> norm -> GELU,
    + s0; conv3 1x1 -> norm = Y.  Class token: X_c * Linear(GELU(Linear(GAP(Y)))) (no sigmoid).

    Ablations: `norm` 'bn'|'ln'|'none' (Table 11; Table 8 forms use 'none'); `token_mixer` 'dwconv' |
    'avgpool' (Table 8, 3x3 average pool) | 'none'; `dw_shortcut` (Table 9); `se` 'cls' (official) | 'all'
    (re-calibrate every token, Table 9) | 'none' (class token passes through unchanged, Table 8 "split CLS").
    Like the official code, DAFF has no dropout.

    `layout` (the same maths): 'tokens' keeps the patch tokens as [B, N_p, C] rows: the 1x1 convs are F.linear
    on their weights viewed [out, in], the norms work on the rows (a free [B*N_p, C, 1, 1] view), and only the
    depthwise conv sees a map (the channels_last view of the rows, no copy); 'channels_last' runs every conv on
    that channels_last view; 'nchw' copies the tokens to an NCHW map as the official code does. 'auto' is
    'tokens' on a CPU in bf16/fp16 and 'channels_last' otherwise (the faster forms measured), except 'nchw' while
    the BatchNorms are split into per-GPU groups in training (a SplitBatchNorm2d splits NCHW maps without a
    copy); see `_layout`.
    """

    def __init__(self, dim: int, hidden_dim: int, norm: str = "bn", token_mixer: str = "dwconv",
                 dw_shortcut: bool = True, se: str = "cls", se_ratio: int = 4, layout: str = "auto"):
        super().__init__()
        if layout not in DAFF_LAYOUTS:
            raise ValueError(f"DAFF layout {layout!r} is not supported; use one of {DAFF_LAYOUTS}.")
        self.layout = layout
        if token_mixer not in ("dwconv", "avgpool", "none"):
            raise ValueError(f"DAFF token_mixer {token_mixer!r} is not supported; use 'dwconv', 'avgpool' or 'none'.")
        if se not in ("cls", "all", "none"):
            raise ValueError(f"DAFF se {se!r} is not supported; use 'cls', 'all' or 'none'.")
        self.conv1 = nn.Conv2d(dim, hidden_dim, 1)
        self.bn1 = make_norm2d(norm, hidden_dim, split=True)
        self.act1 = nn.GELU()
        self.token_mixer = token_mixer
        if token_mixer == "dwconv":
            self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
            self.bn2 = make_norm2d(norm, hidden_dim, split=True)
            self.act2 = nn.GELU()
        elif token_mixer == "avgpool":
            self.conv2 = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.dw_shortcut = dw_shortcut
        self.conv3 = nn.Conv2d(hidden_dim, dim, 1)
        self.bn3 = make_norm2d(norm, dim, split=True)
        self.se = se
        if se != "none":
            self.compress = nn.Linear(dim, dim // se_ratio)
            self.se_act = nn.GELU()
            self.excitation = nn.Linear(dim // se_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        s = _grid_side(N - 1)
        tracing = is_fx_symbolic_tracing()  # torch.fx: the map forms only, laid out at run time in `_daff_map`
        layout = self.layout if tracing else self._layout(x)
        if layout == "tokens" and not tracing:
            return self._forward_tokens(x, s)
        cls, tokens = x[:, :1], x[:, 1:]
        y = _daff_map(tokens.reshape(B, s, s, C).permute(0, 3, 1, 2), layout,  # a channels_last view of x
                      getattr(self.bn1, "num_splits", 1) > 1 and self.training)
        y = self.act1(self.bn1(self.conv1(y)))
        if self.token_mixer != "none":
            z = self.conv2(y)
            if self.token_mixer == "dwconv":
                z = self.act2(self.bn2(z))
            y = y + z if self.dw_shortcut else z
        y = self.bn3(self.conv3(y))  # [B, C, s, s]
        tokens = y.permute(0, 2, 3, 1).flatten(1, 2)
        if self.se != "none":
            w = self.excitation(self.se_act(self.compress(y.mean(dim=(2, 3)))))[:, None]  # [B, 1, C]
            cls = cls * w
            if self.se == "all":
                tokens = tokens * w
        return torch.cat([cls, tokens], dim=1)

    def _forward_tokens(self, x: torch.Tensor, s: int) -> torch.Tensor:
        """The same maths on [B, N_p, C] rows (see the class docstring)."""
        cls, tokens = x[:, :1], x[:, 1:]
        y = self.act1(_rows_norm(self.bn1, F.linear(tokens, self.conv1.weight.flatten(1), self.conv1.bias), s))
        if self.token_mixer != "none":
            z = _as_rows(self.conv2(_as_map(y, s)))
            if self.token_mixer == "dwconv":
                z = self.act2(_rows_norm(self.bn2, z, s))
            y = y + z if self.dw_shortcut else z
        y = _rows_norm(self.bn3, F.linear(y, self.conv3.weight.flatten(1), self.conv3.bias), s)  # [B, N_p, C]
        if self.se != "none":
            w = self.excitation(self.se_act(self.compress(y.mean(dim=1))))[:, None]  # [B, 1, C]
            cls = cls * w
            if self.se == "all":
                y = y * w
        return torch.cat([cls, y], dim=1)

    def _layout(self, x: torch.Tensor) -> str:
        """The layout this call runs in. 'auto', from same-process timings on an AVX512-BF16 CPU
        (benchmarks/daff_layouts.py, batch 128, forward + backward, same weights): 'nchw' while the BatchNorms are
        split into groups in training (tokens 0.73x / 0.95x of it in fp32 / bf16); else 'tokens' on a CPU in
        bf16/fp16 (1.06x the official DAFF block, 1.04x the official model; channels_last 0.89x / 0.95x) and
        'channels_last' otherwise (the official code's own layout: its permuted view is channels_last-strided; in
        fp32 tokens is 0.97x-1.0x of it; other devices keep it until measured)."""
        if self.layout != "auto":
            return self.layout
        if getattr(self.bn1, "num_splits", 1) > 1 and self.training:
            return "nchw"
        return "tokens" if _cpu_low_precision(x) else "channels_last"


def _as_map(rows: torch.Tensor, s: int) -> torch.Tensor:
    """[B, s*s, C] rows -> the [B, C, s, s] map (a channels_last view of contiguous rows: no copy)."""
    return rows.unflatten(1, (s, s)).permute(0, 3, 1, 2)


def _as_rows(y: torch.Tensor) -> torch.Tensor:
    """[B, C, s, s] -> [B, s*s, C] rows (a view for a channels_last map)."""
    return y.permute(0, 2, 3, 1).flatten(1, 2)


def _rows_norm(norm: nn.Module, rows: torch.Tensor, s: int) -> torch.Tensor:
    """A DAFF channel norm (BatchNorm2d, LayerNorm2d, Identity, SplitBatchNorm2d) applied to [B, s*s, C] rows:
    through the free [B*s*s, C, 1, 1] view (statistics over every row, as over the map), except a BatchNorm split
    into per-GPU groups in training, which needs each image's rows together: it gets the [B, C, s, s] map."""
    if getattr(norm, "num_splits", 1) > 1 and norm.training:
        return _as_rows(norm(_as_map(rows, s))).contiguous()
    B, n, C = rows.shape
    return norm(rows.reshape(B * n, C, 1, 1)).view(B, n, C)


class Mlp(nn.Module):
    """ViT's token-wise feed-forward in timm's layout (fc1, GELU, fc2)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(attn(LN1 x)); x + DropPath(mlp(LN2 x)); LayerNorm eps 1e-6."""

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] | None = None):
        super().__init__()
        norm_layer = norm_layer or (lambda d: nn.LayerNorm(d, eps=1e-6))
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
