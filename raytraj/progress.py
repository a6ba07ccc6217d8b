"""Progress for people and for logs: a tqdm bar on a terminal, plain lines elsewhere.

A bar draws nothing when stderr is not a terminal (a log file, ``ray job submit`` output), which
left long runs silent for minutes. There, one line per update is printed instead, at most every
``RAYTRAJ_PROGRESS_S`` seconds (default 10), plus the last one.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm


class LineProgress:
    """The part of tqdm's interface that raytraj uses, printing ``desc: n/total (pct%) k=v``."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", interval: float | None = None, file=None):
        self.total, self.n, self.desc = total, initial, desc
        self.interval = float(os.environ.get("RAYTRAJ_PROGRESS_S", "10")) if interval is None else interval
        self.file = file or sys.stderr
        self.postfix = ""
        self._last = time.monotonic()
        self._printed = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.interval:
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def _print(self) -> None:
        pct = 100.0 * self.n / self.total if self.total else 100.0
        print(f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%){' ' + self.postfix if self.postfix else ''}",
              file=self.file, flush=True)
        self._last, self._printed = time.monotonic(), self.n

    def close(self) -> None:
        if self.n != self._printed:
            self._print()


def progress_bar(total: int, initial: int = 0, desc: str = "", enabled: bool = True):
    """A tqdm bar on a terminal, LineProgress in a log, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(total=total, initial=initial, desc=desc, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, leave=False)
    return LineProgress(total, initial, desc)
