"""trainer_log.jsonl parsing: progress, NaN/Inf loss with the guide's advice, a loss that stopped falling.
(The llamafactory tier parses a log the real LLaMA-Factory wrote.)"""

from __future__ import annotations

import json

from generator.core.trainlog import NAN_ADVICE, parse


def line(step: int, loss: float | None, total: int = 100) -> str:
    entry = {"current_steps": step, "total_steps": total, "loss": loss, "lr": 5e-5, "epoch": step / 50,
             "percentage": round(step / total * 100, 2), "elapsed_time": "0:01:00", "remaining_time": "0:09:00"}  # fmt: skip
    return json.dumps({k: v for k, v in entry.items() if v is not None})


def test_nothing_logged_yet() -> None:
    assert parse("") is None
    assert parse('{"current_ste') is None


def test_progress_of_the_last_step() -> None:
    progress = parse("\n".join(line(s, 2.0 - s / 100) for s in range(1, 11)))
    assert progress is not None
    assert (progress.current_steps, progress.total_steps, progress.percentage) == (10, 100, 10.0)
    assert progress.loss == 1.9 and progress.lr == 5e-5 and progress.remaining == "0:09:00"
    assert progress.bar(10) == "[#.........] 10/100" and not progress.finished
    assert progress.problems == []


def test_a_line_being_written_is_ignored_but_a_broken_line_is_reported() -> None:
    assert parse(line(1, 2.0) + "\n" + '{"current_st').problems == []
    assert parse("garbage\n" + line(1, 2.0)).problems == ["line 1 of trainer_log.jsonl is not JSON"]


def test_nan_loss_is_flagged_with_the_guides_advice() -> None:
    text = "\n".join([line(1, 2.0), line(2, float("nan")), line(3, float("nan"))])
    progress = parse(text)
    assert progress is not None
    assert progress.problems == [f"loss is nan from step 2: {NAN_ADVICE}"]
    assert progress.as_dict()["loss"] == "nan"


def test_infinite_loss_is_flagged_too() -> None:
    assert "loss is inf" in parse(line(1, float("inf"))).problems[0]


def test_a_loss_that_stopped_falling_is_reported() -> None:
    flat = [2.0, 1.5, 1.2, 1.0, 0.9] + [0.95, 0.92, 0.97, 0.91, 0.93]
    progress = parse("\n".join(line(i + 1, v) for i, v in enumerate(flat)))
    assert progress is not None and any("loss stopped falling" in p for p in progress.problems)
    falling = [2.0 - i * 0.1 for i in range(10)]
    assert parse("\n".join(line(i + 1, v) for i, v in enumerate(falling))).problems == []


def test_eval_only_lines_without_loss_are_tolerated() -> None:
    progress = parse(line(1, 2.0) + "\n" + line(2, None))
    assert progress is not None and progress.current_steps == 2 and progress.losses == [2.0]


def test_the_closing_line_without_a_loss_keeps_the_last_logged_loss() -> None:
    text = (
        '{"current_steps": 23, "total_steps": 24, "loss": 5.9, "lr": 1e-05, "percentage": 95.8}\n'
        '{"current_steps": 24, "total_steps": 24, "percentage": 100.0}\n'
    )
    progress = parse(text)
    assert progress is not None
    assert (progress.current_steps, progress.loss, progress.lr) == (24, 5.9, 1e-05)


def test_a_loss_logged_as_zero_is_a_nan_the_trainer_filtered() -> None:
    text = "".join(
        f'{{"current_steps": {s}, "total_steps": 6, "loss": {loss}, "lr": 1e30, "percentage": {s * 100 / 6}}}\n'
        for s, loss in ((1, 5.99), (2, 5.98), (3, 0.0), (4, 0.0))
    )
    progress = parse(text)
    assert progress is not None
    assert progress.problems == [
        f"loss is 0.0 from step 3, how the trainer logs a NaN or infinite loss: {NAN_ADVICE}"
    ]


def test_tokens_per_second_of_the_latest_session_not_the_whole_runs_tokens_over_its_time() -> None:
    """After a resume LLaMA-Factory's own `throughput` divides every token since the run began by the new
    session's time; the rate between the session's logged token counts is what it achieved."""

    def logged(step: int, elapsed: str, tokens: int, throughput: float) -> str:
        return json.dumps({"current_steps": step, "total_steps": 20, "loss": 1.0, "elapsed_time": elapsed,
                           "total_tokens": tokens, "throughput": throughput})  # fmt: skip

    first = [logged(s, f"0:00:{10 * s:02d}", 1000 * s, 100.0) for s in (1, 2, 3)]
    resumed = [
        logged(4, "0:00:05", 4000, 800.0),
        logged(5, "0:00:15", 5000, 333.3),
        logged(6, "1 day, 0:00:25", 6000, 0.0),
    ]
    progress = parse("\n".join([*first, *resumed[:2]]))
    assert progress is not None and progress.throughput == 100.0, "(5000 - 4000) tokens in 10 s"
    whole = parse("\n".join(first))
    assert whole is not None and whole.throughput == 100.0
    with_days = parse("\n".join([*first, *resumed]))
    assert with_days is not None and with_days.throughput == round(2000 / (86400 + 20), 2)
    alone = parse(logged(1, "0:00:10", 1000, 99.5))
    assert alone is not None and alone.throughput == 99.5, "one entry: the trainer's own figure"
