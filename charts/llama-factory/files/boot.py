"""How a container that needs extra Python packages starts: install them, then become the script.

    python3 /scripts/boot.py SCRIPT [ARGS...]

PIP_PACKAGES (the values' pipPackages as a JSON list of strings), when set and not empty, is installed with
`pip install --user` beside the image's own packages (under HOME, so what the image pins stays as it is).
The packages reach pip as separate arguments after `--`, from a list, never through a shell: a package can be
neither an option nor code. A malformed list or a failed install exits 1 with the reason, and the script does
not run. Then SCRIPT (a name beside this file, or a path) replaces this process with ARGS: a `.py` script
under this Python, a `.sh` script under /bin/bash, so its exit code and signals are the container's.
Standard library only (Python 3.9+): it runs in every image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# beside this file in the pods' /scripts, as every script's helpers are
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from podlib import EXIT  # noqa: E402

MAX_PACKAGES = 100
MAX_PACKAGE_CHARS = 512


def packages(raw: str) -> list[str]:
    """The packages of PIP_PACKAGES's JSON list; ValueError saying what is wrong with it."""
    try:
        found = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"PIP_PACKAGES is not JSON: {exc}") from None
    if not isinstance(found, list):
        raise ValueError("PIP_PACKAGES is not a JSON list of package names")
    if len(found) > MAX_PACKAGES:
        raise ValueError(f"PIP_PACKAGES names {len(found)} packages; at most {MAX_PACKAGES}")
    for package in found:
        if not isinstance(package, str) or not package.strip() or len(package) > MAX_PACKAGE_CHARS:
            shown = json.dumps(package)[:80]
            raise ValueError(f"PIP_PACKAGES entry {shown} is not a package (a non-empty string)")
        if "\0" in package or "\n" in package:
            raise ValueError(f"PIP_PACKAGES entry {json.dumps(package)[:80]} holds a control character")
    return found


def script_command(script: str, args: list[str]) -> list[str]:
    """The argv that runs script with args: ValueError for a script that is neither .py nor .sh."""
    if "/" not in script:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), script)
    if script.endswith(".py"):
        return [sys.executable, script, *args]
    if script.endswith(".sh"):
        return ["/bin/bash", script, *args]
    raise ValueError(f"{script}: boot.py starts .py and .sh scripts only")


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: boot.py SCRIPT [ARGS...]", file=sys.stderr)
        return EXIT["usage"]
    try:
        command = script_command(argv[0], argv[1:])
    except ValueError as exc:
        print(f"boot: {exc}", file=sys.stderr)
        return EXIT["usage"]
    raw = os.environ.get("PIP_PACKAGES", "").strip()
    if raw:
        try:
            wanted = packages(raw)
        except ValueError as exc:
            print(f"boot: {exc}; nothing installed, {argv[0]} not started", file=sys.stderr, flush=True)
            return EXIT["failed"]
        if wanted:
            print(f"boot: pip install --user {' '.join(wanted)}", flush=True)
            pip = ["pip", "install", "--user", "--no-cache-dir", "--quiet", "--", *wanted]
            code = subprocess.call([sys.executable, "-m", *pip])
            if code != 0:
                why = f"boot: pip install failed (exit {code}); {argv[0]} not started"
                print(why, file=sys.stderr, flush=True)
                return EXIT["failed"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
    return EXIT["failed"]  # not reached: execv returns only by raising


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
