"""Progress for people and for logs: a tqdm bar on a terminal, timestamped lines elsewhere.

Both show the same meter: the count, the values of the step just counted (``val_acc=...``),
elapsed time, the time remaining and the rate, e.g.::

    2026-12-04T15:40:02+00:00 transfer fgmt: 12/30 (40%) [00:09<00:13, 1.33step/s, val_acc=88.15]

A bar draws nothing useful in a log file (``ray job submit`` output, ``> run.log``): there one
line is printed at most every ``RAYTRAJ_PROGRESS_S`` seconds (default 10), plus the first and the
last, each with a timestamp so that a slow run can be told from a hung one.
"""

from __future__ import annotations

import datetime
import math
import os
import sys

from tqdm import tqdm

from .config import ConfigError

INTERVAL_ENV = "RAYTRAJ_PROGRESS_S"
DEFAULT_INTERVAL_S = 10.0
# tqdm's right-hand meter, after the count: [elapsed<remaining, rate, postfix]
METER_FORMAT = "{n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LOG_FORMAT = "{desc}: " + METER_FORMAT


def interval_s() -> float:
    """Seconds between two progress lines in a log: ``$RAYTRAJ_PROGRESS_S``, a number >= 0."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:  # also NaN
        raise ConfigError(f"{INTERVAL_ENV}={text!r} is not a number of seconds >= 0; set it to e.g. 10, or unset "
                          "it for the default")
    return value


def timestamp() -> str:
    """Local time with its UTC offset, to the second: 2026-12-04T15:40:02+00:00."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class LogProgress(tqdm):
    """tqdm's meter as plain timestamped lines: the first, one per ``interval`` seconds, and the last.

    Rate and time remaining are averages over this run (``smoothing=0``), steadier than tqdm's
    moving average between lines that are seconds apart.
    """

    monitor_interval = 0  # no monitor thread: lines come only from update() and close()

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it",
                 interval: float | None = None, file=None):
        super().__init__(total=total, initial=initial, desc=desc, unit=unit, file=file or sys.stderr,
                         mininterval=interval_s() if interval is None else interval, miniters=1, smoothing=0,
                         bar_format=LOG_FORMAT, dynamic_ncols=False, ascii=True, leave=False)

    def display(self, msg=None, pos=None):
        if msg == "":  # tqdm clearing a terminal line: nothing to clear in a log
            return False
        self.fp.write(f"{timestamp()} {self.format_meter(**self.format_dict)}\n")
        self.fp.flush()
        return True

    def set_postfix(self, ordered_dict=None, refresh=False, **values):
        # the values go out with the next line, beside the count they belong to
        super().set_postfix(ordered_dict, refresh=False, **values)

    def close(self):
        if not self.disable and self.n != self.last_print_n:
            self.display()  # the last step always gets its line
        super().close()


def meter(n: int, total: int, elapsed: float, initial: int = 0, unit: str = "it") -> str:
    """The count, elapsed time, time remaining and rate without a bar object, for events counted
    elsewhere (Tune's trials): ``n/total (pct%) [elapsed<remaining, rate]``. ``initial`` counts what
    was done before this process started (a resume): it is not in the rate."""
    return tqdm.format_meter(n, total, elapsed, unit=unit, bar_format=METER_FORMAT, initial=initial)


def progress_bar(total: int, initial: int = 0, desc: str = "", enabled: bool = True, unit: str = "it"):
    """A tqdm bar on a terminal, LogProgress in a log, nothing when not ``enabled``.

    Set the values of a step with ``set_postfix`` before the ``update`` that counts it.
    """
    if not enabled:
        return tqdm(total=total, initial=initial, desc=desc, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False)
    return LogProgress(total, initial, desc, unit)
