"""``raytraj distill``: a student trained on an ensemble's soft labels, against the same student
trained on hard labels with the same recipe and seed."""

from __future__ import annotations

import numpy as np
import torch

from .. import fs
from ..config import ConfigError, replace
from ..recorded import data_of
from ..models import config_for_data
from ..train import train
from ..transfer.problem import open_source
from ..writelock import locks_output
from .ensemble import RESULT
from .trial import load_probs


@locks_output("out", what="distillation")
def distill(ensemble: str, out: str, *, student: str = "mlp", student_args: dict | None = None,
            epochs: int | None = None, lr: float | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Train a student on an ensemble's averaged soft labels, and the same student on hard labels.

    Args:
        ensemble: a finished ``raytraj ensemble`` folder whose members saved their probabilities.
        out: output folder (OUT/soft and OUT/hard hold the two students' trajectories).
        student: the student's zoo model (or factory).
        student_args: the student's config fields.
        epochs, lr: override the source's recipe.
        seed: the students' seed.
        progress: show progress bars.

    Returns:
        the record written to OUT/distill.json: the teacher's and both students' test accuracy.
    """
    if not fs.exists(fs.join(ensemble, RESULT)):
        raise ConfigError(f"{ensemble} holds no finished ensemble ({RESULT} is missing); run `raytraj ensemble` first")
    record = fs.read_json(fs.join(ensemble, RESULT))
    source = open_source(record["source"])
    data = data_of(source)
    teacher = np.mean([load_probs(m["run"], "train") for m in record["members"]], axis=0)
    teacher_test = np.mean([load_probs(m["run"], "test") for m in record["members"]], axis=0)
    recipe = source.recipe()
    recipe = replace(recipe, **{k: v for k, v in {"epochs": epochs, "lr": lr}.items() if v is not None})
    model_cfg = config_for_data(student, data.input_shape, data.num_classes, **(student_args or {}))
    soft = train(model_cfg, data, recipe, seed, fs.join(out, "soft"), soft_targets=torch.from_numpy(teacher).float(),
                 soft_info={"ensemble": ensemble, "members": len(record["members"])}, progress=progress)
    hard = train(model_cfg, data, recipe, seed, fs.join(out, "hard"), progress=progress)
    result = {
        "ensemble": ensemble,
        "student": {"model": student, **(student_args or {})},
        "epochs": recipe.epochs,
        "teacher_test_acc": 100.0 * float((teacher_test.argmax(1) == data.y["test"].numpy()).mean()),
        "soft_label_student": {"test_acc": soft.test_acc, "val_acc": soft.val_acc[-1], "train_s": soft.train_s},
        "hard_label_student": {"test_acc": hard.test_acc, "val_acc": hard.val_acc[-1], "train_s": hard.train_s},
    }
    fs.atomic_write_json(fs.join(out, "distill.json"), result)
    return result
