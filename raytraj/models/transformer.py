"""A small pre-LN transformer encoder classifier for sequences (nanoGPT's model.py, without the causal mask).

The input (B, C, L) is cut into L / patch patches of C * patch values each; a Linear embeds each
patch, a learned position embedding is added, ``depth`` pre-LN blocks follow, and the tokens are
mean-pooled (or a learned cls token is read) into the classifier ``head``. MNIST-1D's (1, 40)
signal with the default ``patch=4`` becomes 10 tokens.

q, k and v are separate Linear layers rather than nanoGPT's fused ``c_attn``, so that every head
and within-head dim has its own rows, which permutation-spec inference can follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError


@dataclass(frozen=True)
class TransformerConfig:
    in_channels: int = 1
    seq_len: int = 40
    num_classes: int = 10
    patch: int = 4
    depth: int = 2
    width: int = 64
    heads: int = 4
    mlp_ratio: int = 2
    pool: str = "mean"  # "mean" over tokens, or "cls" for a learned classification token

    def __post_init__(self):
        if self.patch < 1 or self.seq_len % self.patch:
            raise ConfigError(f"transformer: patch={self.patch} must divide the sequence length {self.seq_len}; "
                              "pick another --model-arg patch=")
        if self.width < 1 or self.heads < 1 or self.width % self.heads:
            raise ConfigError(f"transformer: width={self.width} must be a positive multiple of heads={self.heads}")
        if self.depth < 1 or self.mlp_ratio < 1:
            raise ConfigError(f"transformer: depth and mlp_ratio must be >= 1, got {self.depth} and {self.mlp_ratio}")
        if self.pool not in ("mean", "cls"):
            raise ConfigError(f"transformer: pool must be 'mean' or 'cls', got {self.pool!r}")


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.size(0), x.size(1)  # x: (B, T, C); fx cannot unpack x.size() into three names
        q = self.q(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)
        k = self.k(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)
        v = self.v(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, d)
        y = y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, C): heads side by side
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))  # (B, T, C) -> (B, T, hidden) -> (B, T, C)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        tokens = cfg.seq_len // cfg.patch
        self.embed = nn.Linear(cfg.in_channels * cfg.patch, cfg.width)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width)) if cfg.pool == "cls" else None
        self.pos = nn.Parameter(torch.randn(1, tokens + (cfg.pool == "cls"), cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        B = x.size(0)
        x = x.reshape(B, cfg.in_channels, cfg.seq_len // cfg.patch, cfg.patch)  # (B, C_in, T, P); (B, L) too
        x = x.transpose(1, 2).reshape(B, cfg.seq_len // cfg.patch, cfg.in_channels * cfg.patch)  # (B, T, C_in*P)
        x = self.embed(x)  # (B, T, C)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1)  # (B, 1 + T, C)
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        x = x[:, 0] if self.cls is not None else x.mean(1)  # (B, C)
        return self.head(x)
