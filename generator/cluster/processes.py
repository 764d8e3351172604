"""The local cluster's processes: started in a session of their own with their output in `logs/<name>.log`,
recorded by PID in the state, waited for until healthy, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable

from ..errors import ClusterError
from .state import State


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:  # os.kill(-1, ...) would address every process
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def start(state: State, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    state.logs.mkdir(parents=True, exist_ok=True)
    with (state.logs / f"{name}.log").open("ab") as log:
        # a session of its own: stopping the cluster never signals the caller, and the caller's Ctrl-C
        # does not kill the cluster behind its back
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    state.pids[name] = process.pid
    state.save()


def tail(state: State, name: str, lines: int = 15) -> str:
    try:
        text = (state.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str, token: str = "", timeout: float = 2.0) -> bool:
    """200 from a health endpoint on 127.0.0.1. The components' serving certificates are self-signed and
    unknown to us, so these loopback health checks skip verification; API calls go through the verified client."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_healthy(state: State, name: str, url: str, timeout: float, token: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url, token):
            return
        if not alive(state.pids[name]):
            raise ClusterError(f"{name} exited during start-up; last lines of its log:\n{tail(state, name)}")
        time.sleep(0.3)
    raise ClusterError(
        f"{name} did not become healthy within {timeout:.0f} s; last lines of its log:\n{tail(state, name)}"
    )


def stop(pids: Iterable[tuple[str, int]], grace: float = 20) -> list[str]:
    """SIGTERM each process (in the order given), then SIGKILL what is left after `grace` seconds."""
    pids = list(pids)
    stopped = []
    for name, pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
            stopped.append(name)
    deadline = time.monotonic() + grace
    for _, pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    return stopped
