"""The README and docs/ name only what exists: every `make` target, `lfk` command and flag, and repository
path they mention is there, and every `lfk` command is in the command table of docs/commands.md.
Documentation that drifts from the code is caught here rather than by a new user."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from generator.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "images" / "README.md"]
TOP_FOLDERS = ("values/", "charts/", "generator/", "tests/", "hack/", "images/", "schemas/", "docs/", ".ci/")
# placeholders a path or command may carry: <exp>, EXP, NAME, RUN, ... (upper case) or a glob
PLACEHOLDER = re.compile(r"<[^>]*>|\b[A-Z][A-Z_]{1,}\b|[*{]|\.\.\.")


def code_spans(text: str) -> list[str]:
    """Inline code and the lines of fenced blocks."""
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        spans += block.splitlines()
    return spans


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m for line in text.splitlines() for m in re.findall(r"^([a-zA-Z][\w-]*)\s*:(?!=)", line)}


def lfk_commands() -> dict[str, click.Command]:
    """Every command and subcommand by its words ("data sync")."""
    found: dict[str, click.Command] = {}
    with click.Context(cli) as ctx:
        for name in cli.list_commands(ctx):
            command = cli.get_command(ctx, name)
            assert command is not None
            found[name] = command
            if isinstance(command, click.Group):
                with click.Context(command, parent=ctx) as sub:
                    for child in command.list_commands(sub):
                        found[f"{name} {child}"] = command.get_command(sub, child)  # type: ignore[assignment]
    return found


def options(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
    return names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_named_exists(document: Path) -> None:
    targets = make_targets()
    named: set[str] = set()
    flags: set[str] = set()
    for span in code_spans(document.read_text(encoding="utf-8")):
        for match in re.finditer(
            r"(?:^|[;&|(]\s*|\$ )make((?:\s+[A-Z_]+=\S+)*)((?:\s+[a-z][\w-]*)+)(\s+--?\w[\w-]*)?", span
        ):
            named.update(match.group(2).split())
            if match.group(3):  # `make gpu-bench --tiny` is make's own (unknown) option, not the target's
                flags.add(match.group(0).strip())
    missing = sorted(named - targets)
    assert not missing, f"{document.name} names make targets the Makefile lacks: {missing}"
    assert not flags, f"{document.name} passes a target's option to make itself: {sorted(flags)}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_lfk_command_and_flag_named_exists(document: Path) -> None:
    commands = lfk_commands()
    wrong = []
    for span in code_spans(document.read_text(encoding="utf-8")):
        for match in re.finditer(r"(?:^|[;&|(]\s*|\$ )lfk ([a-z][^;&|`]*)", span):
            words = [w.rstrip(":,)") for w in match.group(1).split()]
            name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
            if name not in commands:
                # alternatives written as `lfk install / uninstall`
                wrong.append(f"lfk {name}")
                continue
            flags = {
                w.split("=")[0].rstrip("]),") for w in words if w.lstrip("[").startswith("--") and w != "--"
            }
            flags = {f.lstrip("[") for f in flags}
            unknown = sorted(
                f for f in flags if not PLACEHOLDER.search(f) and f not in options(commands[name])
            )
            wrong += [f"lfk {name} {f}" for f in unknown]
    assert not wrong, f"{document.name} names lfk commands or flags that do not exist: {sorted(set(wrong))}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_exists(document: Path) -> None:
    missing = []
    for span in code_spans(document.read_text(encoding="utf-8")):
        for token in re.findall(r"[\w./-]+", span):
            token = token.rstrip(".,:")
            if token.startswith("../") and len(token) > 3:  # a clone holds only the repository
                missing.append(f"{token} (outside the repository)")
                continue
            if not token.startswith(TOP_FOLDERS) or PLACEHOLDER.search(token):
                continue
            if not (ROOT / token).exists():
                missing.append(token)
    assert not missing, f"{document.name} names paths that do not exist: {sorted(set(missing))}"


def test_every_lfk_command_is_in_the_command_table() -> None:
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in text.splitlines() if line.startswith("| `lfk "))
    absent = [name for name in lfk_commands() if not re.search(rf"`lfk [^`]*\b{name.split()[0]}\b", table)]
    assert not absent, f"docs/commands.md's command table lacks: {absent}"


def test_the_layout_names_every_module_and_image() -> None:
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    words = set(re.findall(r"[\w-]+", layout))
    modules = {
        p.stem
        for p in (ROOT / "generator").rglob("*.py")
        # cli/ is one module per group of commands, which the command table lists
        if p.stem not in ("__init__", "__main__") and "cli" not in p.parts
    }
    images = {p.name for p in (ROOT / "images").iterdir() if p.is_dir()}
    missing = sorted((modules | images) - words)
    assert not missing, f"the Layout in docs/testing.md does not name: {missing}"
