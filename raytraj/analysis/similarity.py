"""``raytraj analyze similarity``: does the permuted source trajectory point where the target goes?

The paper's Fig. 3 (Assumption P): along two recorded trajectories, the cosine similarity

    cos( pi(theta1^t - theta1^{t-1}),  theta2^t - theta2^{t-1} )

over all parameters, once with pi = identity and once with pi from displacement matching,
pi = argmax sum_t <theta2^t - theta2^{t-1}, pi(theta1^t - theta1^{t-1})>.

Choices (the paper's caption leaves them open):

* The points are the training iterations both stores recorded, from 0 to ``window`` in steps
  of ``every`` (record with ``raytraj train --save-every N``); t-1 is the previous such point.
* One pi over the whole window, matched on all its displacements. That pi is fitted on the
  very vectors it is scored on, so the JSON also holds a held-out score: pi fitted on the
  even-numbered displacements only, scored on the odd-numbered ones.
* Batches are shared when both runs have the same seed, batch size and data (batch order is a
  function of those), e.g. a target trained with ``--init TARGET:0 --seed SOURCE_SEED``; the
  JSON records whether they were. Independent batches make the displacements noisier.
* BatchNorm statistics are not parameters and are left out.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .. import fs
from ..recorded import data_of
from ..perm import PermutationSpec, apply_permutation, match, perm_to_lists
from ..progress import progress_bar
from ..trajectory import TrajectoryStore
from ..writelock import locks_output
from .align import checked_spec
from .figures import pyplot, save_figure
from .models import AnalysisError

Tensors = Mapping[str, torch.Tensor]


def cosine(a: Tensors, b: Tensors) -> float:
    """Cosine similarity of two states seen as one flat vector each."""
    dot = sum(float((a[k].double() * b[k].double()).sum()) for k in a)
    na = sum(float(a[k].double().pow(2).sum()) for k in a) ** 0.5
    nb = sum(float(b[k].double().pow(2).sum()) for k in b) ** 0.5
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def displacement_similarity(spec: PermutationSpec, perm, source: Sequence[Tensors], target: Sequence[Tensors]):
    """cos(perm(source[i]), target[i]) for every i."""
    return [cosine(apply_permutation(spec, perm, s), t) for s, t in zip(source, target)]


def common_iterations(source: TrajectoryStore, target: TrajectoryStore, window: int, every: int) -> list[int]:
    """The iterations 0..window, multiples of ``every``, that both stores recorded."""
    def recorded(store):
        its = [s.get("iteration") for s in store.manifest["steps"]]
        if any(i is None for i in its):
            raise AnalysisError(f"{store.location} does not record training iterations per step; record it with "
                                "`raytraj train`")
        return its

    src, tgt = recorded(source), recorded(target)
    points = sorted(i for i in set(src) & set(tgt) if i <= window and i % every == 0)
    if len(points) < 2:
        raise AnalysisError(
            f"the stores {source.location} and {target.location} have no overlapping steps after iteration 0 within "
            f"--window {window} at --every {every} (source records iterations {src[:6]}..., target {tgt[:6]}...); "
            "record both with the same `raytraj train --save-every N` or change --every/--window")
    return points


def shared_batches(source: TrajectoryStore, target: TrajectoryStore) -> bool:
    a, b = source.meta, target.meta
    return (a.get("seed") == b.get("seed") and a["data"] == b["data"]
            and a["recipe"].get("batch_size") == b["recipe"].get("batch_size"))


@locks_output("out", what="analysis")
def trajectory_similarity(source: str, target: str, out: str, *, window: int = 500, every: int = 10,
                          seed: int = 0, progress: bool = True) -> dict:
    """Cosine similarity of the two trajectories' displacements; writes OUT/similarity.json and .png.

    Args:
        source: trajectory store of theta1 (the one permuted).
        target: trajectory store of theta2.
        out: output folder.
        window: last training iteration considered.
        every: iterations between points (both stores must have recorded them).
        seed: the matching solver's group order.
        progress: show a progress bar.

    Returns:
        what OUT/similarity.json holds: per point the cosine before and after matching, their
        means, a held-out check, and the permutation.
    """
    if every < 1 or window < 1:
        raise AnalysisError(f"--every and --window must be >= 1, got {every} and {window}")
    src, tgt = TrajectoryStore(source), TrajectoryStore(target)
    if src.meta["model"] != tgt.meta["model"] or src.shapes != tgt.shapes:
        raise AnalysisError(f"{source} holds a {src.meta['model']} model and {target} a {tgt.meta['model']} model: "
                            "different architectures; compare trajectories of one architecture")
    points = common_iterations(src, tgt, window, every)
    step_of = [{s["iteration"]: s["step"] for s in st.manifest["steps"]} for st in (src, tgt)]
    names = src.param_names
    disp: list[list[dict]] = [[], []]
    prev = [None, None]
    bar = progress_bar(len(points), desc="read steps", enabled=progress, unit="step")
    for it in points:
        for side, store in enumerate((src, tgt)):
            cur = store.read(step_of[side][it], names)
            if prev[side] is not None:
                disp[side].append({k: cur[k] - prev[side][k] for k in names})
            prev[side] = cur
        bar.set_postfix(iteration=it)
        bar.update(1)
    bar.close()
    data = data_of(src)
    spec = checked_spec(src.meta["model"], data)
    identity = [cosine(s, t) for s, t in zip(*disp)]
    perm, info = match(spec, [(t, s) for s, t in zip(*disp)], seed=seed)
    matched = displacement_similarity(spec, perm, *disp)
    heldout = None
    if len(disp[0]) >= 2:
        fit, _ = match(spec, [(t, s) for s, t in list(zip(*disp))[0::2]], seed=seed)
        scored = displacement_similarity(spec, fit, disp[0][1::2], disp[1][1::2])
        heldout = {"fit_on": "even-numbered displacements", "iterations": points[2::2], "cos": scored,
                   "mean": float(np.mean(scored))}
    result = {
        "source": source, "target": target, "window": window, "every": every, "iterations": points[1:],
        "shared_batches": shared_batches(src, tgt), "one_pi_over_window": True,
        "cos_identity": identity, "cos_matched": matched,
        "mean_identity": float(np.mean(identity)), "mean_matched": float(np.mean(matched)),
        "heldout": heldout, "matching": {k: info[k] for k in ("objective", "sweeps", "converged")},
        "perm": perm_to_lists(perm),
    }
    fs.atomic_write_json(fs.join(out, "similarity.json"), result)
    plot_similarity(result, fs.join(out, "similarity.png"))
    return result


def plot_similarity(r: dict, out: str, title: str | None = None) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(r["iterations"], r["cos_matched"], "-", lw=2,
            label=f"π matched on the window (mean {r['mean_matched']:.2f})")
    if r["heldout"]:
        h = r["heldout"]
        ax.plot(h["iterations"], h["cos"], "o", ms=4,
                label=f"π fitted on the other steps, held out (mean {h['mean']:.2f})")
    ax.plot(r["iterations"], r["cos_identity"], ":", lw=2, label=f"identity (mean {r['mean_identity']:.2f})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("training iteration t")
    ax.set_ylabel("cos(π(Δθ1^t), Δθ2^t)")
    ax.set_ylim(min(-0.1, min(r["cos_identity"]) - 0.05), 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "displacement similarity" + (" (shared batches)" if r["shared_batches"] else
                                                       " (independent batches)"), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)
