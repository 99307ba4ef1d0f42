"""The official DHVT forward pass, written the way the official code writes it (explicit softmax attention,
NCHW reshapes in DAFF, one GELU module reused), for speed comparisons in the same process only.

It reads dhvtlib's state_dict (same layout), so `OfficialDHVT.from_dhvt(model)` runs the same weights; the
benchmark checks that both give the same logits before timing them. Not part of the package.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from timm.layers import DropPath


class Affine(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, ch, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, ch, 1, 1))

    def forward(self, x):
        return x * self.alpha + self.beta


def conv3x3(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o))


class ConvPatchEmbed(nn.Module):
    def __init__(self, patch_size, embed_dim):
        super().__init__()
        k = int(math.log2(patch_size))
        w = [3] + [embed_dim // 2 ** (k - 1 - i) for i in range(k)]
        layers = []
        for i in range(k):
            layers.append(conv3x3(w[i], w[i + 1]))
            if i < k - 1 or patch_size == 2:
                layers.append(nn.GELU())
        self.proj = nn.Sequential(*layers)
        self.pre_affine, self.post_affine = Affine(3), Affine(embed_dim)

    def forward(self, x):
        x = self.post_affine(self.proj(self.pre_affine(x)))
        return x.flatten(2).transpose(1, 2)


class HI_Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        hd = dim // num_heads
        self.scale = hd ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.ht_proj = nn.Linear(hd, dim)
        self.ht_norm = nn.LayerNorm(hd)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_heads, dim))

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        x_ = x.reshape(B, -1, h, C // h).permute(0, 2, 1, 3).mean(dim=2)
        x_ = self.ht_proj(x_).reshape(B, -1, h, C // h)
        x_ = self.act(self.ht_norm(x_)).flatten(2) + self.pos_embed.expand(B, -1, -1)
        x = torch.cat([x, x_], dim=1)
        qkv = self.qkv(x).reshape(B, N + h, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = self.proj((attn @ v).transpose(1, 2).reshape(B, N + h, C))
        cls, patch, ht = torch.split(x, [1, N - 1, h], dim=1)
        return torch.cat([cls + torch.mean(ht, dim=1, keepdim=True), patch], dim=1)


class DAFF(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(hidden), nn.BatchNorm2d(hidden), nn.BatchNorm2d(dim)
        self.squeeze = nn.AdaptiveAvgPool2d((1, 1))
        self.compress = nn.Linear(dim, dim // 4)
        self.excitation = nn.Linear(dim // 4, dim)

    def forward(self, x):
        B, N, C = x.size()
        cls_token, tokens = torch.split(x, [1, N - 1], dim=1)
        s = int(math.sqrt(N - 1))
        x = tokens.reshape(B, s, s, C).permute(0, 3, 1, 2)
        x = self.act(self.bn1(self.conv1(x)))
        x = x + self.act(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        weight = self.excitation(self.act(self.compress(self.squeeze(x).flatten(1).reshape(B, 1, C))))
        return torch.cat((cls_token * weight, x.flatten(2).permute(0, 2, 1)), dim=1)


class Block(nn.Module):
    def __init__(self, dim, heads, dpr):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = HI_Attention(dim, heads), DAFF(dim, 4 * dim)
        self.drop_path = DropPath(dpr) if dpr > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OfficialDHVT(nn.Module):
    def __init__(self, patch_size=4, embed_dim=192, depth=12, num_heads=4, num_classes=100, drop_path_rate=0.0):
        super().__init__()
        self.patch_embed = ConvPatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, d) for d in dpr])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.head(self.norm(self.blocks(x))[:, 0])

    @classmethod
    def from_dhvt(cls, model) -> "OfficialDHVT":
        c = model.config
        ref = cls(c["patch_size"], c["embed_dim"], c["depth"], c["num_heads"], c["num_classes"], c["drop_path_rate"])
        ref.load_state_dict(model.state_dict(), strict=True)
        return ref
