"""Stock models and digits data for benchmarks/bench_stock_transfers.py, named by import path
(``stock_models:resnet18``): each factory builds its library's own model, unchanged, with random
weights; the data functions give scikit-learn's digits as the model expects them (3x8x8
images for torchvision and the ViTs, pixel values as token ids for BERT), for a class subset."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

SPLIT_SEED = 777


def _digits(classes: str):
    from sklearn.datasets import load_digits

    lo, hi = (int(c) for c in classes.split("-"))
    d = load_digits()
    keep = (d.target >= lo) & (d.target <= hi)
    x, y = d.images[keep], d.target[keep] - lo
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    x, y = x[order], y[order]
    k, v = int(0.7 * len(y)), int(0.85 * len(y))
    return x, y, (slice(0, k), slice(k, v), slice(v, None))


def digits_images(classes: str = "0-4", size: int = 8, channels: int = 3):
    """Digits ``classes`` ("0-4") as float images (N, channels, size, size), standardised, labels 0..k-1."""
    x, y, parts = _digits(classes)
    x = torch.tensor((x - 8.0) / 6.0, dtype=torch.float32)[:, None]
    x = nn.functional.interpolate(x, size=(size, size), mode="nearest").repeat(1, channels, 1, 1)
    y = torch.tensor(y)
    return {s: (x[p], y[p]) for s, p in zip(("train", "val", "test"), parts)}


CLS = 17  # a first token for BERT's pooler to read; pixel values are tokens 0..16


def digits_tokens(classes: str = "0-4"):
    """Digits ``classes`` as token ids, int64 (N, 17): CLS, then the 4x4 average-pooled pixel values 0..16.

    Pooled to 16 tokens because a 2-layer BERT trained by SGD learns the 64-pixel sequence too slowly."""
    x, y, parts = _digits(classes)
    x = nn.functional.avg_pool2d(torch.tensor(x, dtype=torch.float32)[:, None], 2).round().long().flatten(1)
    x = torch.cat([torch.full((len(x), 1), CLS), x], 1)
    y = torch.tensor(y)
    return {s: (x[p], y[p]) for s, p in zip(("train", "val", "test"), parts)}


class EncoderClassifier(nn.Module):
    """The stock nn.TransformerEncoder (its default layer: dropout 0.1, post-LN) over the image's rows."""

    def __init__(self, width=32, heads=4, depth=2, num_classes=5):
        super().__init__()
        self.embed = nn.Linear(8, width)  # one token per row of 8 pixels
        self.pos = nn.Parameter(torch.randn(1, 8, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):  # (B, 1, 8, 8)
        h = self.encoder(self.embed(x.flatten(1, 2)) + self.pos)  # (B, 8, width)
        return self.head(h.mean(1))


def encoder(width=32, heads=4, depth=2, num_classes=5):
    return EncoderClassifier(width, heads, depth, num_classes)


def bert(hidden=32, layers=2, heads=4, num_classes=5, init=0.2):
    """Hugging Face BertForSequenceClassification from a small config (its dropout 0.1 kept); head ``classifier``.

    ``initializer_range`` 0.2 instead of 0.02: at 0.02 SGD leaves it at chance on these data."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=CLS + 1, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=17, num_labels=num_classes,
                     initializer_range=init)
    return BertForSequenceClassification(cfg)


def resnet18(num_classes=5):
    """torchvision's resnet18, unchanged; head ``fc``."""
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def vit(img_size=8, patch=2, dim=64, depth=2, heads=4, num_classes=5):
    """timm's VisionTransformer from a small config (3x8x8 images, 2x2 patches: 16 tokens and its class token);
    random weights, nothing downloaded; head ``head``."""
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size, patch_size=patch,
                             embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=2.0, num_classes=num_classes)


def hf_vit(img_size=8, patch=2, hidden=64, layers=2, heads=4, num_classes=5):
    """Hugging Face ViTForImageClassification from a small config (its dropout 0 kept); head ``classifier``."""
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=img_size, patch_size=patch, num_channels=3, hidden_size=hidden,
                    num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                    num_labels=num_classes)
    return ViTForImageClassification(cfg)


class GroupNormCNN(nn.Module):
    """A CNN with GroupNorm and a residual block, as users write them."""

    def __init__(self, width=32, groups=8, num_classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.GroupNorm(groups, width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(groups, 2 * width),
                                  nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):  # (B, 1, 8, 8)
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(self.down(h).mean((2, 3)))


def gn_cnn(width=32, groups=8, num_classes=5):
    return GroupNormCNN(width, groups, num_classes)
