"""A user's own package, written outside the repository by tests: a model that is not in the zoo
(a network with a conv stem, GroupNorm, a residual block and Dropout), a data function, a hand-written spec
and a plain PyTorch training loop that records with TrajectoryRecorder."""

import sys
import textwrap
from pathlib import Path

NAME = "byo_userpkg"

NETS = '''
import torch
import torch.nn as nn


class Block(nn.Module):
    """h + W2 relu(GN(W1 h)): a residual block, so one permutation sits on both axes of W2's output."""

    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.norm = nn.GroupNorm(1, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h):
        return h + self.fc2(torch.relu(self.norm(self.fc1(h))))


class ResMLP(nn.Module):
    def __init__(self, width=64, num_classes=10, dropout=0.1):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 8)  # the whole 8x8 image: one output position
        self.stem_norm = nn.GroupNorm(1, width)
        self.block = Block(width)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        h = torch.relu(self.stem_norm(self.stem(x))).flatten(1)
        h = torch.relu(self.block(h))
        return self.classifier(self.drop(h))


def make_net(width=64, num_classes=10, dropout=0.1):
    return ResMLP(width, num_classes, dropout)


def broken(width=64):
    raise RuntimeError("out of coffee")
'''

DATA = '''
import numpy as np
import torch
from sklearn.datasets import load_digits


def load(n=1797, classes=10):
    d = load_digits()
    keep = d.target < classes
    x = torch.tensor(d.images[keep][:n] / 16.0, dtype=torch.float32)[:, None]
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target[keep][:n], dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(7).permutation(len(y)))
    x, y = x[order], y[order]
    n_val, n_test = len(y) // 10, len(y) // 5
    return {"train": (x[n_val + n_test:], y[n_val + n_test:]), "val": (x[:n_val], y[:n_val]),
            "test": (x[n_val:n_val + n_test], y[n_val:n_val + n_test])}


def flat(n=1797):
    out = load(n)
    return {k: (x.flatten(1)[:, :10], y) for k, (x, y) in out.items()}


def negative_labels(n=500):
    out = load(n)
    return {k: (x, y - 1) for k, (x, y) in out.items()}


def not_a_mapping():
    return [1, 2, 3]
'''

SPECS = '''
from raytraj import PermutationSpec


def no_perm(model):
    """A valid but trivial spec: nothing permuted."""
    state = model.state_dict()
    return PermutationSpec(axes={k: (None,) * v.dim() for k, v in state.items()},
                           shapes={k: tuple(v.shape) for k, v in state.items()})


def wrong(model):
    """Permutes the classifier's inputs but nothing feeding them: check_spec must reject it."""
    spec = no_perm(model)
    axes = dict(spec.axes)
    axes["classifier.weight"] = (None, "c")
    return PermutationSpec(axes=axes, shapes=spec.shapes)
'''

TRAIN = '''
"""A plain PyTorch training loop that records its trajectory."""
import sys

import torch
import torch.nn.functional as F

import raytraj
from byo_userpkg.data import load
from byo_userpkg.nets import make_net


def main(out, seed=1, epochs=4, width=64, crash_after=None):
    torch.manual_seed(seed)
    model = make_net(width=width)
    data = load()
    x, y = data["train"]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = raytraj.TrajectoryRecorder(out, model, model_factory="byo_userpkg.nets:make_net",
                                     model_kwargs={"width": width}, data="byo_userpkg.data:load", seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.record(model, loss=loss.item())
        if crash_after is not None and epoch + 1 == crash_after:
            raise SystemExit(3)
    rec.close()
    return model


if __name__ == "__main__":
    main(sys.argv[1], seed=int(sys.argv[2]))
'''


def write_user_package(root: Path) -> Path:
    """Write the package under ``root`` (outside the repo); returns the folder to put on sys.path."""
    pkg = Path(root) / NAME
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for name, text in (("nets", NETS), ("data", DATA), ("specs", SPECS), ("train", TRAIN)):
        (pkg / f"{name}.py").write_text(textwrap.dedent(text))
    return Path(root)


def importable(root: Path) -> None:
    """Make the package importable in this process (subprocesses get PYTHONPATH)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
