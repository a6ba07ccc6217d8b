"""A tiny token classifier as users bring it: nn.Embedding + stock nn.TransformerEncoder + a head,
fed int64 token ids, returning a dict (``{"logits": ...}``) or a tuple; and synthetic token data
whose label is a function of which tokens occur. Named by import path in the tests
(``token_models:make_net``, ``token_models:load``)."""

import torch
import torch.nn as nn

VOCAB, SEQ = 16, 8


class TokenNet(nn.Module):
    def __init__(self, width=16, heads=2, depth=1, num_classes=4, output="dict"):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, num_classes)
        self.output = output

    def forward(self, tokens):  # (B, L) int64
        h = self.encoder(self.embed(tokens))  # (B, L, width)
        logits = self.head(h.mean(1))  # (B, C)
        if self.output == "dict":
            return {"hidden": h, "logits": logits}
        if self.output == "tuple":
            return logits, h
        return logits


def make_net(width=16, heads=2, depth=1, num_classes=4, output="dict"):
    return TokenNet(width, heads, depth, num_classes, output)


def load(n=400, num_classes=4):
    """Token ids (n, SEQ) int64; the label is which quarter of the vocabulary occurs most."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (n, SEQ), generator=g)
    y = torch.stack([(x // (VOCAB // num_classes) == c).sum(1) for c in range(num_classes)], 1).argmax(1)
    k, v = int(0.7 * n), int(0.85 * n)
    return {"train": (x[:k], y[:k]), "val": (x[k:v], y[k:v]), "test": (x[v:], y[v:])}
