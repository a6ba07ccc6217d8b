"""Matplotlib without a display, and figures written atomically (PNG)."""

from __future__ import annotations

import io

from .. import fs


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    fs.atomic_write_bytes(out, buf.getvalue())
    return out
