"""Training progress from LLaMA-Factory's trainer_log.jsonl (one JSON object per logging step).

Pure: text in, a Progress out. Flags what the guide's "during training" checklist asks a person to watch:
a loss that is NaN or infinite (too high a learning rate), and a loss that stopped falling.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

# the guide's advice, the same wherever it is given: its recipe trains at 5e-5, and after a NaN loss at 1e-5
LEARNING_RATE_ADVICE = "lower the learning rate: the guide trains at 5e-5, and at 1e-5 after a Loss = NaN"
NAN_ADVICE = f"Loss = NaN: the learning rate is too high; {LEARNING_RATE_ADVICE}, and start a new run"
PLATEAU_WINDOW = 5  # logged losses per comparison window


@dataclass(frozen=True)
class Progress:
    current_steps: int
    total_steps: int
    percentage: float
    loss: float | None
    lr: float | None
    epoch: float | None
    elapsed: str
    remaining: str
    losses: list[float] = field(default_factory=list)
    loss_steps: list[int] = field(default_factory=list)  # the step of each of `losses`
    throughput: float | None = None  # tokens/s, logged when include_num_input_tokens_seen is on
    problems: list[str] = field(default_factory=list)  # NaN/Inf, plateau, unreadable lines

    @property
    def finished(self) -> bool:
        return self.total_steps > 0 and self.current_steps >= self.total_steps

    def bar(self, width: int = 30) -> str:
        done = int(round(width * min(1.0, self.percentage / 100)))
        return "[" + "#" * done + "." * (width - done) + f"] {self.current_steps}/{self.total_steps}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "current_steps": self.current_steps,
            "total_steps": self.total_steps,
            "percentage": self.percentage,
            "loss": _json_number(self.loss),
            "lr": self.lr,
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "remaining": self.remaining,
            "problems": self.problems,
            "throughput": self.throughput,
            "loss_curve": [
                [step, _json_number(loss)] for step, loss in zip(self.loss_steps, self.losses, strict=True)
            ],
        }


def _json_number(value: float | None) -> float | str | None:
    """NaN and Inf are not JSON: they travel as strings."""
    if value is not None and not math.isfinite(value):
        return str(value)
    return value


def parse(text: str) -> Progress | None:
    """The progress after the last logged step, or None when nothing was logged yet."""
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)  # LLaMA-Factory writes NaN for a NaN loss; json reads it back
        except ValueError:
            # a line still being written is normal for the last one only
            if number != len(text.splitlines()):
                problems.append(f"line {number} of trainer_log.jsonl is not JSON")
            continue
        if isinstance(entry, dict) and "current_steps" in entry:
            entries.append(entry)
    if not entries:
        return None
    last = entries[-1]
    # the trainer's closing line (its summary at the end) carries no loss: show the last one logged
    logged = next((e for e in reversed(entries) if "loss" in e), last)
    logged_losses = [e for e in entries if isinstance(e.get("loss"), int | float)]
    losses = [float(e["loss"]) for e in logged_losses]
    bad = [e for e in entries if isinstance(e.get("loss"), float) and not math.isfinite(e["loss"])]
    # the trainer logs a NaN or infinite step as the window's average of the finite ones
    # (logging_nan_inf_filter, on by default): a window of nothing but NaN steps is logged as exactly 0.0,
    # which a language-model loss never is
    zero = [e for e in entries if e.get("loss") == 0]
    if bad:
        problems.append(f"loss is {bad[0]['loss']} from step {bad[0]['current_steps']}: {NAN_ADVICE}")
    elif zero:
        step = zero[0]["current_steps"]
        problems.append(
            f"loss is 0.0 from step {step}, how the trainer logs a NaN or infinite loss: {NAN_ADVICE}"
        )
    elif plateau := _plateau(losses):
        problems.append(plateau)
    return Progress(
        current_steps=int(last["current_steps"]),
        total_steps=int(last.get("total_steps", 0)),
        percentage=float(last.get("percentage", 0.0)),
        loss=logged.get("loss"),
        lr=logged.get("lr"),
        epoch=last.get("epoch"),
        elapsed=str(last.get("elapsed_time", "")),
        remaining=str(last.get("remaining_time", "")),
        losses=losses,
        loss_steps=[int(e["current_steps"]) for e in logged_losses],
        throughput=session_throughput(entries),
        problems=problems,
    )


def _seconds(elapsed: Any) -> float | None:
    """LLaMA-Factory's elapsed_time ("1:02:03", "1 day, 2:03:04") in seconds."""
    text = str(elapsed)
    days, _, clock = text.rpartition(", ") if ", " in text else ("", "", text)
    try:
        hours, minutes, seconds = (float(p) for p in clock.split(":"))
    except ValueError:
        return None
    return (int(days.split()[0]) if days else 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def session_throughput(entries: list[dict[str, Any]]) -> float | None:
    """Tokens/s of the latest training session. LLaMA-Factory logs `throughput` as every token seen since the
    run began over the time since this session began, so after a resume it counts the earlier sessions'
    tokens too: the rate between the session's first and last logged `total_tokens` is what it achieved."""
    counted: list[tuple[dict[str, Any], float]] = [
        (e, t) for e in entries if "total_tokens" in e and (t := _seconds(e.get("elapsed_time"))) is not None
    ]
    session: list[tuple[dict[str, Any], float]] = []
    for entry, seconds in counted:
        if session and seconds < session[-1][1]:  # the clock started again: a new session
            session = []
        session.append((entry, seconds))
    if len(session) >= 2 and session[-1][1] > session[0][1]:
        tokens = float(session[-1][0]["total_tokens"]) - float(session[0][0]["total_tokens"])
        return round(tokens / (session[-1][1] - session[0][1]), 2)
    return next((float(e["throughput"]) for e in reversed(entries) if "throughput" in e), None)


def _plateau(losses: list[float]) -> str | None:
    """The loss has not fallen when the best of the last window is no better than the best before it."""
    if len(losses) < 2 * PLATEAU_WINDOW:
        return None
    recent = min(losses[-PLATEAU_WINDOW:])
    before = min(losses[:-PLATEAU_WINDOW])
    if recent >= before * 0.995:
        return (
            f"loss stopped falling: the last {PLATEAU_WINDOW} logged values (best {recent:.4f}) are no better than "
            f"before (best {before:.4f}); check the learning rate and the data, or stop early"
        )
    return None
