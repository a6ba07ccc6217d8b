"""Permutability of the models users bring: how much of each stock model spec inference permutes.

    python benchmarks/bench_permutability.py --out benchmarks/results/permutability.md

For each model, built by its own library with random weights (nothing is downloaded) and fed a
small batch, the benchmark records:

* **coverage**: hidden axes permuted against the axes a permutation could move, and tensors
  permuted against all (``raytraj.perm.coverage.spec_coverage``; the input's channels, the
  vocabulary and the classes are fixed by the data and do not count);
* **proof**: whether ``check_spec`` passes (models run as built, dropout included);
* **planted**: whether weight matching finds a planted permutation again: the weights permuted
  by a random permutation of the spec, then matched back to the originals (``match``);
* **time**: CPU seconds (user+sys) of ``infer_spec``.

Any failure is one line in the table, never a traceback.

Environment. torchvision and timm need a torch they were built with: PyPI's torchvision wheel is
built against the CUDA torch and fails to import beside the CPU wheel (``operator torchvision::nms
does not exist``). Install the benchmark's stack into its own virtual environment, so the core
install stays light (the CUDA wheels run on a CPU too; about 5.5 GB):

    python -m venv .venv-bench && . .venv-bench/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 timm transformers -e .

(the same as ``pip install -e '.[bench]'`` after the torch/torchvision pair). A model whose library
is missing is one "skipped" line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import signal
import sys
import time
import traceback
import warnings
from typing import Callable

import torch
import torch.nn as nn

from raytraj.perm import apply_permutation, check_spec, infer_spec, match, random_permutation
from raytraj.perm.coverage import spec_coverage

CLASSES = 10
VOCAB, SEQ = 100, 8
BATCH = 4
PLANTED_SWEEPS = 8  # coordinate-descent sweeps allowed to find a planted permutation again


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def images(size: int = 32) -> torch.Tensor:
    return torch.randn(BATCH, 3, size, size)


def tokens(vocab: int = VOCAB, eos: int | None = None) -> torch.Tensor:
    x = torch.randint(3, vocab, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    if eos is not None:
        x[:, -1] = eos
    return x


# -- PyTorch --------------------------------------------------------------------------------------
class TokenEncoder(nn.Module):
    """nn.Embedding + the stock nn.TransformerEncoder (dropout 0.1, batch_first) + a linear head."""

    def __init__(self, width=32, heads=4, depth=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.randn(1, SEQ, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x) + self.pos).mean(1))


class TokenDecoder(nn.Module):
    """The stock nn.TransformerDecoder over an embedded sequence, attending to itself as memory."""

    def __init__(self, width=32, heads=4, depth=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        layer = nn.TransformerDecoderLayer(width, heads, 2 * width, dropout=0.1, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, depth)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.decoder(h, h).mean(1))


class GNBlock(nn.Module):
    def __init__(self, cin, cout, groups=8):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout)
        self.conv2, self.norm2 = nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = nn.functional.silu(self.norm1(self.conv1(x)))
        return nn.functional.silu(self.norm2(self.conv2(h)) + self.skip(x))


class GroupNormUNet(nn.Module):
    """A U-Net block as diffusion models use it: GroupNorm residual blocks, a downsampling path, an
    upsampling path with a skip concatenation; a pooled linear head makes it a classifier."""

    def __init__(self, width=32):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.down1, self.down2 = GNBlock(width, width), GNBlock(width, 2 * width)
        self.mid = GNBlock(2 * width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = GNBlock(2 * width, width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        s = self.down1(self.stem(x))  # (B, w, H, W)
        h = self.mid(self.down2(nn.functional.avg_pool2d(s, 2)))  # (B, 2w, H/2, W/2)
        h = self.dec(torch.cat([self.up(h), s], 1))  # (B, w, H, W)
        return self.head(h.mean((2, 3)))


# -- the table ------------------------------------------------------------------------------------
def torchvision_model(name: str, **kw) -> Callable:
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=CLASSES, **kw)
    return build


def timm_model(name: str, **kw) -> Callable:
    def build():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=CLASSES, **kw)
    return build


def hf(model_cls: str, config_cls: str, **cfg) -> Callable:
    def build():
        import transformers

        config = getattr(transformers, config_cls)(num_labels=CLASSES, **cfg)
        return getattr(transformers, model_cls)(config)
    return build


SMALL_LM = dict(vocab_size=VOCAB, pad_token_id=0)
MODELS: list[tuple[str, str, Callable, Callable]] = [
    # (name, library, build, example input)
    ("nn.TransformerEncoder", "torch", TokenEncoder, tokens),
    ("nn.TransformerDecoder", "torch", TokenDecoder, tokens),
    ("GroupNorm U-Net block", "torch", GroupNormUNet, images),
    ("alexnet (64x64)", "torchvision", torchvision_model("alexnet"), lambda: images(64)),
    ("vgg11", "torchvision", torchvision_model("vgg11"), images),
    ("vgg11_bn", "torchvision", torchvision_model("vgg11_bn"), images),
    ("resnet18", "torchvision", torchvision_model("resnet18"), images),
    ("resnet50", "torchvision", torchvision_model("resnet50"), images),
    ("resnext50_32x4d", "torchvision", torchvision_model("resnext50_32x4d"), images),
    ("wide_resnet50_2", "torchvision", torchvision_model("wide_resnet50_2"), images),
    ("squeezenet1_0", "torchvision", torchvision_model("squeezenet1_0"), images),
    ("squeezenet1_1", "torchvision", torchvision_model("squeezenet1_1"), images),
    ("densenet121", "torchvision", torchvision_model("densenet121"), images),
    ("shufflenet_v2_x0_5", "torchvision", torchvision_model("shufflenet_v2_x0_5"), images),
    ("mobilenet_v2", "torchvision", torchvision_model("mobilenet_v2"), images),
    ("mobilenet_v3_small", "torchvision", torchvision_model("mobilenet_v3_small"), images),
    ("mobilenet_v3_large", "torchvision", torchvision_model("mobilenet_v3_large"), images),
    ("mnasnet0_5", "torchvision", torchvision_model("mnasnet0_5"), images),
    ("efficientnet_b0", "torchvision", torchvision_model("efficientnet_b0"), images),
    ("efficientnet_v2_s", "torchvision", torchvision_model("efficientnet_v2_s"), images),
    ("regnet_x_400mf", "torchvision", torchvision_model("regnet_x_400mf"), images),
    ("regnet_y_400mf", "torchvision", torchvision_model("regnet_y_400mf"), images),
    ("convnext_tiny", "torchvision", torchvision_model("convnext_tiny"), images),
    ("googlenet", "torchvision", torchvision_model("googlenet", aux_logits=False, init_weights=False), images),
    ("inception_v3 (75x75)", "torchvision", torchvision_model("inception_v3", aux_logits=False, init_weights=False),
     lambda: images(75)),
    ("vit_b_16 (32x32, patch 16)", "torchvision", torchvision_model("vit_b_16", image_size=32), images),
    ("vit_b_32 (64x64, patch 32)", "torchvision", torchvision_model("vit_b_32", image_size=64), lambda: images(64)),
    ("swin_t", "torchvision", torchvision_model("swin_t"), images),
    ("swin_v2_t", "torchvision", torchvision_model("swin_v2_t"), images),
    ("maxvit_t (224x224)", "torchvision", torchvision_model("maxvit_t"), lambda: images(224)),
    ("resnet18", "timm", timm_model("resnet18"), images),
    ("vit_tiny_patch16 (32x32)", "timm", timm_model("vit_tiny_patch16_224", img_size=32), images),
    ("deit_tiny_patch16 (32x32)", "timm", timm_model("deit_tiny_patch16_224", img_size=32), images),
    ("convnext_atto", "timm", timm_model("convnext_atto"), images),
    ("efficientnet_b0", "timm", timm_model("efficientnet_b0"), images),
    ("mobilenetv3_small_050", "timm", timm_model("mobilenetv3_small_050"), images),
    ("BertForSequenceClassification", "transformers",
     hf("BertForSequenceClassification", "BertConfig", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, **SMALL_LM), tokens),
    ("GPT2ForSequenceClassification", "transformers",
     hf("GPT2ForSequenceClassification", "GPT2Config", n_embd=32, n_layer=2, n_head=4, n_positions=SEQ,
        **SMALL_LM), tokens),
    ("ViTForImageClassification", "transformers",
     hf("ViTForImageClassification", "ViTConfig", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64), images),
    ("LlamaForSequenceClassification", "transformers",
     hf("LlamaForSequenceClassification", "LlamaConfig", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ, **SMALL_LM), tokens),
    ("T5ForSequenceClassification", "transformers",
     hf("T5ForSequenceClassification", "T5Config", d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        eos_token_id=1, decoder_start_token_id=0, **SMALL_LM), lambda: tokens(eos=1)),
]


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def one_line(e: BaseException) -> str:
    """An exception as one line: its type, its first line, and where in the code it came from."""
    tb = traceback.extract_tb(e.__traceback__)
    where = next((f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(tb) if "raytraj" in f.filename), "")
    msg = (str(e).splitlines() or [""])[0][:160]
    return f"{type(e).__name__}: {msg}" + (f" ({where})" if where else "")


def planted(model: nn.Module, spec, seed: int = 0) -> str:
    """Permute the weights by a random permutation of ``spec`` and match them back to the originals."""
    if not spec.sizes:
        return "n/a (nothing permuted)"
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    perm = random_permutation(spec, torch.Generator().manual_seed(seed + 1))
    moved = apply_permutation(spec, perm, state)
    found, info = match(spec, [(moved, state)], seed=seed, max_sweeps=PLANTED_SWEEPS, rtol=1e-4)
    wrong = [g for g in spec.sizes if not torch.equal(found[g], perm[g])]
    if not wrong:
        return "yes"
    # Plain matching sums raw inner products, so a tensor with large entries (a 1x1 conv initialised by
    # fan-out) drowns the others; normalised terms (``match(normalize=True)``) weigh each tensor alike.
    again, info2 = match(spec, [(moved, state)], seed=seed, max_sweeps=PLANTED_SWEEPS, rtol=1e-4, normalize=True)
    if all(torch.equal(again[g], perm[g]) for g in spec.sizes):
        return "yes, normalized (plain: a local optimum)"
    # Whose fault: the matching, stopped in a local optimum below the planted permutation's objective, or
    # the spec, when another permutation scores as high (a symmetry it does not capture, or ties).
    ratio = _objective(spec, found, state, moved) / _objective(spec, perm, state, moved)
    why = "local optimum of the matching" if ratio < 1 - 1e-6 else "another permutation scores as high"
    return (f"no ({len(wrong)} of {len(spec.sizes)} groups differ after {info['sweeps']} sweeps; {why}: objective "
            f"{100 * ratio:.0f}% of the planted one's)")


def _objective(spec, perm, state, moved) -> float:
    """Git Re-Basin's objective: sum over tensors of <moved, perm(state)>."""
    back = apply_permutation(spec, perm, state)
    return float(sum((back[k].double() * moved[k].double()).sum() for k in state))


def bench(name: str, build: Callable, example: Callable, limit_s: int) -> dict:
    row = {"model": name}
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    stage = "build"
    try:
        torch.manual_seed(0)
        model, x = build(), example()
        row["params"] = sum(p.numel() for p in model.parameters())
        stage = "inference"
        c0 = cpu_s()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = infer_spec(model, x)
        row["infer_cpu_s"] = round(cpu_s() - c0, 2)
        fixed = {3, CLASSES} if x.is_floating_point() else {CLASSES, VOCAB}
        cov = spec_coverage(spec, model, fixed=fixed)
        row.update(tensors=cov.tensors, tensors_permuted=cov.tensors_permuted, axes=cov.axes,
                   axes_permuted=cov.axes_permuted, groups=len(spec.sizes))
        stage = "check_spec"
        try:
            check_spec(model, spec, x)
            row["proof"] = "passes"
        except Timeout:
            raise
        except Exception as e:  # noqa: BLE001 - the table records the failure in one line
            row["proof"] = "fails: " + one_line(e)
        stage = "planted"
        row["planted"] = planted(model, spec)
    except ImportError as e:
        row["error"] = f"skipped: {e}"
    except Timeout:
        row["error"] = f"{stage} took longer than {limit_s}s"
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{stage}: {one_line(e)}"
    finally:
        signal.alarm(0)
    return row


def full(row: dict) -> bool:
    return ("error" not in row and row["axes"] > 0 and row["axes_permuted"] == row["axes"]
            and row.get("proof") == "passes" and str(row.get("planted")).startswith("yes"))


def library_versions() -> str:
    out = [f"torch {torch.__version__}"]
    for name in ("torchvision", "timm", "transformers"):
        try:
            out.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            out.append(f"{name} not installed")
    return ", ".join(out)


def render(rows: list[dict], runs: list[dict]) -> str:
    covered = sum(full(r) for r in rows)
    normalized = sum(full(r) and r["planted"] != "yes" for r in rows)
    lines = [
        "## Permutability of stock models",
        "",
        *[f"Command: `{r['command']}`; {r['seconds']:.0f} s wall on {platform.machine()} with torch "
          f"{torch.__version__}, load at the end: `{r['load']}`." for r in runs],
        f"Libraries: {library_versions()}.",
        "Random weights, small configs and inputs (images 4x3x32x32 unless the name gives another size, token ids "
        "4x8 over a vocabulary of 100), "
        f"{CLASSES} classes. *Hidden axes*: permuted / permutable (a Linear's or Conv's two channel axes, an "
        "Embedding's features, a norm's and an attention module's tensors, the last axis of other tensors; not the "
        "input channels, the vocabulary or the classes). *Proof*: `check_spec` on the model as built (its "
        f"dropout included). *Planted*: weight matching (at most {PLANTED_SWEEPS} sweeps) recovers a random "
        "permutation of the spec from the permuted weights. "
        "*Inference*: CPU seconds of `infer_spec`.",
        "",
        f"**Fully covered (all hidden axes, proof passes, planted permutation recovered): {covered} of {len(rows)} "
        f"({100 * covered / len(rows):.0f}%)**; of those, {normalized} recovered the planted permutation only with "
        "normalized matching (`match(normalize=True)`): plain matching stopped in a local optimum below the "
        "planted permutation's objective.",
        "",
        "| model | library | params | hidden axes | tensors | groups | proof | planted | inference CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            params = f"{r['params']:,}" if "params" in r else ""
            lines.append(f"| {r['model']} | {r['library']} | {params} | {r['error']} | | | | | |")
            continue
        share = 100 * r["axes_permuted"] / r["axes"] if r["axes"] else 0
        lines.append(f"| {r['model']} | {r['library']} | {r['params']:,} | {r['axes_permuted']}/{r['axes']} "
                     f"({share:.0f}%) | {r['tensors_permuted']}/{r['tensors']} | {r['groups']} | {r['proof']} | "
                     f"{r['planted']} | {r['infer_cpu_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/permutability.md")
    p.add_argument("--only", help="comma-separated prefixes of LIBRARY:NAME to run, e.g. torchvision:resnet50,timm")
    p.add_argument("--skip", help="comma-separated prefixes of LIBRARY:NAME not to run")
    p.add_argument("--limit-s", type=int, default=600, help="per model, for inference, the proof and the matching")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="only write one table from these runs' JSON files")
    p.add_argument("--torchvision-all", action="store_true",
                   help="inference and coverage only (no proof, no matching) for every torchvision classification "
                        "model up to --max-params, written to --out")
    p.add_argument("--max-params", type=float, default=150e6, help="with --torchvision-all: larger models are listed "
                                                                    "as not run")
    args = p.parse_args()
    if args.torchvision_all:
        return torchvision_all(args)
    if args.merge:
        runs = []
        for path in args.merge:
            with open(path) as f:
                runs.append(json.load(f))
        order = {(name, lib): i for i, (name, lib, _, _) in enumerate(MODELS)}
        rows = sorted((r for run in runs for r in run.pop("rows")), key=lambda r: order[(r["model"], r["library"])])
        write_report(args.out, render(rows, runs), {"runs": runs, "rows": rows})
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    rows = []
    for name, library, build, example in MODELS:
        key = f"{library}:{name}".lower()
        if args.only and not any(key.startswith(s.lower()) for s in args.only.split(",")):
            continue
        if args.skip and any(key.startswith(s.lower()) for s in args.skip.split(",")):
            continue
        row = {**bench(name, build, example, args.limit_s), "library": library}
        rows.append(row)
        print(json.dumps(row), flush=True)
        # written after every model, so that a run stopped early keeps what it measured
        run = {"command": this_command(), "load": os.popen("uptime").read().strip(),
               "seconds": time.perf_counter() - t0}
        write_report(args.out, render(rows, [run]), {**run, "rows": rows}, echo=False)
    if rows:
        print(open(args.out).read())


# Inputs that the smallest 32x32 image does not fit: Inception's stem, MaxViT's 7x7 windows after /32.
TV_SIZES = {"inception_v3": 75, "alexnet": 64, "maxvit_t": 224}


def torchvision_all(args) -> None:
    """Coverage of spec inference on every torchvision classification model: breadth, without the proof."""
    import torchvision

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    rows = []
    for name in torchvision.models.list_models(module=torchvision.models):
        row = {"model": name}
        kw = {"image_size": 32} if name.startswith("vit_") else {}
        if name in ("googlenet", "inception_v3"):
            kw.update(aux_logits=False, init_weights=False)
        try:
            with torch.device("meta"):  # the size without allocating the weights
                n = sum(p.numel() for p in torchvision.models.get_model(name, num_classes=CLASSES, **kw).parameters())
            row["params"] = n
            if n > args.max_params:
                row["error"] = f"not run: {n / 1e6:.0f}M parameters, over --max-params"
            else:
                torch.manual_seed(0)
                model = torchvision.models.get_model(name, weights=None, num_classes=CLASSES, **kw)
                x = images(TV_SIZES.get(name, 32))
                c0 = cpu_s()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    spec = infer_spec(model, x)
                row["infer_cpu_s"] = round(cpu_s() - c0, 2)
                cov = spec_coverage(spec, model, fixed={3, CLASSES})
                row.update(axes=cov.axes, axes_permuted=cov.axes_permuted, tensors=cov.tensors,
                           tensors_permuted=cov.tensors_permuted, notes=list(spec.unpermuted)[:2])
                del model
        except Exception as e:  # noqa: BLE001 - the table records the failure in one line
            row["error"] = one_line(e)
        rows.append(row)
        print(json.dumps(row), flush=True)
    run = {"command": this_command(), "load": os.popen("uptime").read().strip(), "seconds": time.perf_counter() - t0}
    ran = [r for r in rows if "axes" in r]
    full_rows = [r for r in ran if r["axes"] and r["axes_permuted"] == r["axes"]]
    lines = ["## Spec inference on every torchvision classification model (coverage only)", "",
             f"Command: `{run['command']}`; {run['seconds']:.0f} s wall, torch {torch.__version__}, torchvision "
             f"{torchvision.__version__}, load at the end: `{run['load']}`. Inference and coverage only: no proof and "
             "no planted permutation (those are in the main table for one model of each family).", "",
             f"**All hidden axes permuted: {len(full_rows)} of {len(ran)} models run ({len(rows)} listed).**", "",
             "| model | params | hidden axes | tensors | inference CPU s | why not all |", "|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r['params'] / 1e6:.1f}M" if "params" in r else ""
        if "axes" not in r:
            lines.append(f"| {r['model']} | {params} | {r['error']} | | | |")
            continue
        why = "; ".join(r["notes"]) if r["axes_permuted"] < r["axes"] else ""
        lines.append(f"| {r['model']} | {params} | {r['axes_permuted']}/{r['axes']} | {r['tensors_permuted']}/"
                     f"{r['tensors']} | {r['infer_cpu_s']} | {why[:200]} |")
    write_report(args.out, "\n".join(lines) + "\n", {**run, "rows": rows}, echo=False)


def this_command() -> str:
    return f"python benchmarks/{os.path.basename(sys.argv[0])} " + shlex.join(sys.argv[1:])  # runnable as written


def write_report(out: str, text: str, record: dict, echo: bool = True) -> None:
    """The table as Markdown at ``out``, everything measured beside it as JSON; the table printed."""
    with open(out, "w") as f:
        f.write(text)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(record, f, indent=1)
    if echo:
        print(text)


if __name__ == "__main__":
    main()
