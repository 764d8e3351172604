"""The loss curve as a PNG, as LlamaBoard plots it: the logged loss per step and its moving average. Pure:
the status's training entry in, PNG bytes out (matplotlib draws off-screen; the CLI writes the file
atomically)."""

from __future__ import annotations

import io
import math
from typing import Any

SMOOTHING_WINDOW = 10


def moving_average(values: list[float], window: int = SMOOTHING_WINDOW) -> list[float]:
    out = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i - window + 1) : i + 1] if math.isfinite(v)]
        out.append(sum(recent) / len(recent) if recent else math.nan)
    return out


def loss_png(training: dict[str, Any], title: str) -> bytes:
    """`training`: the status's entry (trainlog.Progress.as_dict()); NaN and Inf arrive as strings."""
    steps = [int(step) for step, _ in training["loss_curve"]]
    losses = [float(loss) for _, loss in training["loss_curve"]]
    from matplotlib.figure import Figure  # a Figure of its own draws off-screen (Agg), without pyplot

    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.add_subplot()
    axes.plot(steps, losses, color="#1f77b4", alpha=0.4, label="loss")
    axes.plot(steps, moving_average(losses), color="#1f77b4", label="smoothed")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(f"{title}: step {training['current_steps']}/{training['total_steps']}")
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
