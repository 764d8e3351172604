"""The merge's export in one process (files/export_in_process.py) with LLaMA-Factory's export (export_model)
and the prompt record replaced by recorders: the export gets the config and the staging folder as
`llamafactory-cli export` would, the record follows in that folder from the training's conversations, a
record that fails does not fail the merge, and a failed export records nothing. The llamafactory tier runs it
whole on a real model (merge.sh)."""

from __future__ import annotations

import contextlib
import io
import sys
import types
from pathlib import Path

import pytest

from tests.support.podfiles import load

Write = tuple[str, str | None, str | None]  # the record's (config, output folder, conversations from)


def start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fails: bool = False,
    record: object = 0,
    exports: list[list[str]] | None = None,
    writes: list[Write] | None = None,
) -> tuple[int, str, list[list[str]], list[Write]]:
    """export_in_process.py in this process: (exit code, its output, the exports' argv, the record's writes)."""
    exports = [] if exports is None else exports
    writes = [] if writes is None else writes

    def export_model() -> None:
        exports.append(list(sys.argv[1:]))
        if fails:
            raise ValueError("Please merge adapters before quantizing the model.")

    def write(config_path: str, output_dir: str | None, conversations_from: str | None) -> int:
        writes.append((config_path, output_dir, conversations_from))
        if isinstance(record, Exception):
            raise record
        return int(record)  # type: ignore[call-overload]

    monkeypatch.setattr(sys, "argv", ["export_in_process.py"])
    monkeypatch.setitem(
        sys.modules, "llamafactory.train.tuner", types.SimpleNamespace(export_model=export_model)
    )
    module = load("export_in_process")
    monkeypatch.setattr(module.prompt_parity, "write", write)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = module.main(["/config/merge.yaml", str(tmp_path / "merged.partial"), "/adapter/record.json"])
    return code, out.getvalue(), exports, writes


def test_the_export_writes_into_the_staging_folder_and_the_record_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, exports, writes = start(tmp_path, monkeypatch)
    staging = str(tmp_path / "merged.partial")
    assert code == 0, out
    assert exports == [["/config/merge.yaml", f"export_dir={staging}"]]
    assert writes == [("/config/merge.yaml", staging, "/adapter/record.json")]
    assert "not written" not in out


def test_a_record_that_cannot_be_written_is_said_and_the_merge_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _, writes = start(tmp_path, monkeypatch, record=OSError("disk full"))
    assert code == 0 and len(writes) == 1
    assert "prompt parity: OSError: disk full" in out
    assert "merge: the prompt parity record was not written; helm test of the served model will say so" in out


def test_a_failed_export_fails_the_merge_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports: list[list[str]] = []
    writes: list[Write] = []
    with pytest.raises(ValueError, match="merge adapters"):  # exit 1 with the traceback, as the CLI's
        start(tmp_path, monkeypatch, fails=True, exports=exports, writes=writes)
    assert len(exports) == 1 and writes == []
