"""A transfer run folder: the one place that knows its file names.

    config.json         the transfer config and where source and target came from
    metrics.json        per-step val accuracy, best step, test accuracy, timing (written last: the run finished)
    best.safetensors    the best-on-val transferred model (BatchNorm buffers included)
    final.safetensors   the model at step T
    perm.json           the best and final permutations
    state/              resumable progress (see transfer/checkpointing.py)
    log.txt             what each command run here printed (the CLI's; see outfolder.py)
    .raytraj-lock       the one-writer lock (see writelock.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import fs

CONFIG = "config.json"
METRICS = "metrics.json"
PERM = "perm.json"
STATE = "state"
PROGRESS = "progress.safetensors"  # in STATE: a transfer saved at least one step (see transfer/checkpointing.py)
MODELS = ("best", "final")


def model_file(which: str = "best") -> str:
    """The file name of the ``which`` ("best" or "final") model in a run folder."""
    return f"{which}.safetensors"


@dataclass(frozen=True)
class RunFolder:
    """Paths and readers for the files of one transfer run.

    Args:
        location: the run folder: a local path, or an ``s3://``/``gs://`` URI.
    """

    location: str

    @property
    def config_path(self) -> str:
        return fs.join(self.location, CONFIG)

    @property
    def metrics_path(self) -> str:
        return fs.join(self.location, METRICS)

    @property
    def perm_path(self) -> str:
        return fs.join(self.location, PERM)

    @property
    def state_dir(self) -> str:
        return fs.join(self.location, STATE)

    def model_path(self, which: str = "best") -> str:
        """Path of the ``which`` ("best" or "final") model's safetensors file."""
        return fs.join(self.location, model_file(which))

    @property
    def started(self) -> bool:
        """A run wrote its config here: a rerun continues it (resume) rather than starting afresh."""
        return fs.exists(self.config_path)

    @property
    def finished(self) -> bool:
        return fs.exists(self.metrics_path)

    @property
    def progressed(self) -> bool:
        """Finished, or saved at least one step: work a rerun must resume rather than redo. A folder
        holding only its config stopped before its first step and holds nothing to keep."""
        return self.finished or fs.exists(fs.join(self.state_dir, PROGRESS))

    def has_model(self, which: str = "best") -> bool:
        """A finished run whose ``which`` model is on disk."""
        return self.finished and fs.exists(self.model_path(which))

    def config(self) -> dict:
        return fs.read_json(self.config_path)

    def metrics(self) -> dict:
        return fs.read_json(self.metrics_path)

    def perm(self) -> dict:
        """perm.json, checked: ``best`` and ``final`` are permutations with the groups and sizes
        of its ``group_sizes``; ConfigError (one line) for an edited or damaged file."""
        from .config import ConfigError
        from .perm.apply import check_perm_lists

        data = fs.read_json(self.perm_path)
        sizes = data.get("group_sizes") if isinstance(data, dict) else None
        if not isinstance(sizes, dict) or not all(isinstance(n, int) and n > 0 for n in sizes.values()):
            raise ConfigError(f"{self.perm_path} lacks valid group_sizes (group -> unit count); the file was edited "
                              "or damaged; run the transfer again")
        for which in MODELS:
            check_perm_lists(data.get(which), sizes, f"{self.perm_path} '{which}'")
        return data

    def load_model(self, which: str = "best") -> tuple[dict, dict]:
        """(state dict, the checkpoint's info: step, method, source) of the ``which`` model."""
        from .checkpoint import load_checkpoint

        return load_checkpoint(self.model_path(which))

    def load_or_run(self, run: Callable[..., dict]) -> dict:
        """The metrics of a finished run here, else ``run(resume=...)``'s, resuming a started one.

        Args:
            run: starts (or, with ``resume=True``, continues) the transfer into this folder and
                returns its metrics, e.g. ``lambda resume: transfer(src, folder.location, cfg, resume=resume)``.
        """
        if self.finished:
            return self.metrics()
        return run(resume=self.started)
