"""Running a peer server as a child process: free ports, readiness polling, clean stop, CPU use.

Nothing here imports pytest, so the benchmarks can use it too. A peer that cannot run here
raises :class:`PeerUnavailable`; the pytest fixtures turn that into a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "PeerUnavailable",
    "PeerFailed",
    "PeerProcess",
    "free_port",
    "find_binary",
    "wait_until",
    "http_get",
    "http_post_form",
    "tcp_open",
    "process_tree_cpu_seconds",
    "HttpPeer",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class PeerUnavailable(Exception):
    """A peer's executable or library is not installed here."""


class PeerFailed(RuntimeError):
    """A peer process exited or did not become ready in time; the message has its log tail."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (for peers that cannot take port 0)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str:
    """Path of an executable, looked up on PATH and in /usr/bin; raises PeerUnavailable."""
    path = shutil.which(name)
    if path is None and Path("/usr/bin", name).exists():
        path = str(Path("/usr/bin", name))
    if path is None:
        raise PeerUnavailable(f"{name} is not installed (make test installs it when run as root)")
    return path


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_seconds: float,
    what: str,
    interval_seconds: float = 0.1,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll ``check`` until it is true; raise PeerFailed naming ``what`` after the timeout.

    ``alive`` is called before each poll and may raise (e.g. when the process died).
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        if alive is not None:
            alive()
        if check():
            return
        if time.monotonic() >= deadline:
            raise PeerFailed(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        time.sleep(interval_seconds)


def http_get(url: str, *, timeout_seconds: float = 30.0) -> tuple[int, bytes]:
    """GET a URL; returns (status, body). HTTP error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def http_post_form(
    url: str, form: list[tuple[str, str]], *, timeout_seconds: float = 30.0
) -> tuple[int, bytes]:
    """POST an application/x-www-form-urlencoded body; returns (status, body)."""
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def process_tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process, its live descendants and its reaped children."""
    children = _children_map()
    total_ticks = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = _stat_fields(current)
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14..17 of stat, i.e. 11..14 after the name.
        total_ticks += sum(int(value) for value in fields[11:15])
        stack.extend(children.get(current, []))
    return total_ticks / CLOCK_TICKS


class PeerProcess:
    """One child process with its output in a log file; stop() is idempotent."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The child's process id (it must have been started)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc.pid

    def start(self) -> None:
        """Start the child in its own process group, output appended to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the child's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise PeerFailed (with the log tail) if the child has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise PeerFailed(
                f"{self.name} exited with status {self._proc.returncode}:\n{self.log_tail()}"
            )

    def wait_ready(self, check: Callable[[], bool], *, timeout_seconds: float, what: str) -> None:
        """Poll until ready; on failure stop the child and raise with its log tail."""
        try:
            wait_until(check, timeout_seconds=timeout_seconds, what=what, alive=self.check_alive)
        except PeerFailed as exc:
            self.stop()
            raise PeerFailed(f"{self.name}: {exc}\n--- log tail ---\n{self.log_tail()}") from None

    def wait_exit(self, *, timeout_seconds: float) -> int:
        """Wait for a short-lived child to finish; kill it after the timeout (status -9)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        try:
            return self._proc.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            self.stop(timeout_seconds=1)
            return -9

    def stop(self, timeout_seconds: float = 15.0) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL it; returns the exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Whatever else is left in the group (e.g. gunicorn workers) goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        return proc.returncode


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class HttpPeer:
    """GET/POST helpers for a peer with an HTTP port; subclasses set ``peer_name`` and have
    ``http_port`` and ``process`` attributes."""

    peer_name = "peer"
    http_port: int
    process: PeerProcess

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str, params: Mapping[str, object] | list[tuple[str, str]]) -> bytes:
        """GET path?params; raises PeerFailed on a non-200 answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = http_get(f"{self.base_url}{path}?{query}")
        if status != 200:
            raise PeerFailed(f"{self.peer_name} {path}?{query} answered {status}: {body[:300]!r}")
        return body

    def post(self, path: str, query: list[tuple[str, str]], form: list[tuple[str, str]]) -> bytes:
        """POST path?query with a form body; raises PeerFailed on a non-200 answer."""
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(query)}"
        status, body = http_post_form(url, form)
        if status != 200:
            raise PeerFailed(f"{self.peer_name} POST {url} {form} answered {status}: "
                             f"{body[:300]!r}")
        return body

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the peer's process tree."""
        return process_tree_cpu_seconds(self.process.pid)
