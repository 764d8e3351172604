"""Writing values: atomic replacement, check mode with a diff, and removal of stale generated files."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.core.render import HEADER_MARK, Rendered
from generator.core.write import write


def item(component: str, body: str) -> Rendered:
    return Rendered(component, f"demo-{component}", f"{HEADER_MARK} test\n{body}", {})


def test_writes_then_reports_unchanged(tmp_path: Path) -> None:
    first = write([item("train", "a: 1\n")], tmp_path)
    assert first.written == [tmp_path / "train.yaml"]
    assert write([item("train", "a: 1\n")], tmp_path).written == []


def test_check_mode_writes_nothing_and_shows_a_diff(tmp_path: Path) -> None:
    write([item("train", "a: 1\n")], tmp_path)
    result = write([item("train", "a: 2\n")], tmp_path, check=True)
    assert result.stale
    assert "-a: 1" in result.diffs[0] and "+a: 2" in result.diffs[0]
    assert (tmp_path / "train.yaml").read_text().endswith("a: 1\n")


def test_generated_files_of_disabled_components_are_removed_but_not_foreign_ones(tmp_path: Path) -> None:
    write([item("train", "a: 1\n"), item("vllm", "b: 1\n")], tmp_path)
    (tmp_path / "webui.yaml").write_text("# my own notes\n")
    result = write([item("train", "a: 1\n")], tmp_path)
    assert result.removed == [tmp_path / "vllm.yaml"]
    assert not (tmp_path / "vllm.yaml").exists()
    assert (tmp_path / "webui.yaml").exists()


def test_a_failed_write_leaves_the_old_file_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write([item("train", "a: 1\n")], tmp_path)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("generator.core.write.os.replace", broken_replace)
    with pytest.raises(OSError):
        write([item("train", "a: 2\n")], tmp_path)
    assert (tmp_path / "train.yaml").read_text().endswith("a: 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.yaml"]


def test_written_files_are_readable_by_others_and_keep_their_mode(tmp_path: Path) -> None:
    import stat

    from generator.core.write import atomic_write

    fresh = tmp_path / "dataset_info.json"
    atomic_write(fresh, "{}\n")
    assert stat.S_IMODE(fresh.stat().st_mode) & 0o044 == 0o044, (
        "the pods' user must read files written on NFS"
    )
    fresh.chmod(0o640)
    atomic_write(fresh, "{}\n")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
