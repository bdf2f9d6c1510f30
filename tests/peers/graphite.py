"""Debian's carbon-cache and graphite-web (under gunicorn) on free loopback ports.

Both run under Debian's /usr/bin/python3, not the project's venv. Everything they write
(whisper files, logs, pid file, the sqlite database, generated settings) lives in one
directory the caller passes in.

    with graphite_stack(tmp_path, schemas=SCHEMAS) as graphite:
        send_plaintext(graphite.line_port, lines)
        graphite.render(target="a.b.*", format="json")
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.peers.process import (
    HttpPeer,
    PeerFailed,
    PeerProcess,
    PeerUnavailable,
    find_binary,
    free_port,
    http_get,
    process_tree_cpu_seconds,
    tcp_open,
)

__all__ = [
    "DEFAULT_SCHEMAS",
    "DEFAULT_AGGREGATION",
    "CarbonCache",
    "GraphiteWeb",
    "GraphiteStack",
    "carbon_cache",
    "graphite_web",
    "graphite_stack",
]

DEBIAN_PYTHON = "/usr/bin/python3"
DEFAULT_SCHEMAS = "[default]\npattern = .*\nretentions = 10s:1d\n"
DEFAULT_AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0.5\naggregationMethod = average\n"
START_ATTEMPTS = 3


def _require_debian_graphite() -> None:
    if not Path(DEBIAN_PYTHON).exists():
        raise PeerUnavailable(f"{DEBIAN_PYTHON} is missing (Debian's graphite peers need it)")
    find_binary("carbon-cache")
    if not Path("/usr/lib/python3/dist-packages/graphite/wsgi.py").exists():
        raise PeerUnavailable("graphite-web is not installed (make test installs it as root)")
    if not Path("/usr/lib/python3/dist-packages/gunicorn").exists():
        raise PeerUnavailable("gunicorn is not installed (make test installs it as root)")


@dataclass(frozen=True)
class CarbonCache:
    """A running carbon-cache: where to send points and where it keeps them."""

    process: PeerProcess
    line_port: int
    pickle_port: int
    cache_query_port: int
    storage_dir: Path
    whisper_dir: Path
    conf_dir: Path
    udp_port: int  # plaintext over UDP

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by carbon-cache."""
        return process_tree_cpu_seconds(self.process.pid)


@dataclass(frozen=True)
class GraphiteWeb(HttpPeer):
    """A running graphite-web under gunicorn."""

    process: PeerProcess
    http_port: int

    peer_name = "graphite-web"


@dataclass(frozen=True)
class GraphiteStack:
    """carbon-cache plus graphite-web reading its whisper files and its cache."""

    carbon: CarbonCache
    web: GraphiteWeb

    @property
    def line_port(self) -> int:
        """carbon's plaintext TCP port."""
        return self.carbon.line_port

    @property
    def pickle_port(self) -> int:
        """carbon's pickle TCP port."""
        return self.carbon.pickle_port

    @property
    def udp_port(self) -> int:
        """carbon's plaintext UDP port."""
        return self.carbon.udp_port

    @property
    def base_url(self) -> str:
        """graphite-web's base URL."""
        return self.web.base_url

    def get(self, path: str, params: Mapping[str, object] | list[tuple[str, str]]) -> bytes:
        """GET from graphite-web."""
        return self.web.get(path, params)

    def post(self, path: str, query: list[tuple[str, str]], form: list[tuple[str, str]]) -> bytes:
        """POST to graphite-web."""
        return self.web.post(path, query, form)

    def cpu_seconds(self) -> float:
        """CPU seconds of carbon-cache plus graphite-web."""
        return self.carbon.cpu_seconds() + self.web.cpu_seconds()


def _carbon_conf(root: Path, line: int, pickle: int, query: int, udp: int, throttled: bool) -> str:
    storage = root / "storage"
    limits = (
        "MAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = inf\nMAX_CREATES_PER_MINUTE = inf\n"
        if not throttled
        else "MAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = 500\nMAX_CREATES_PER_MINUTE = 50\n"
    )
    return (
        "[cache]\n"
        f"STORAGE_DIR = {storage}\n"
        f"LOCAL_DATA_DIR = {storage / 'whisper'}\n"
        f"WHITELISTS_DIR = {storage / 'lists'}\n"
        f"LOG_DIR = {storage / 'log'}\n"
        f"PID_DIR = {storage}\n"
        "USER =\n"
        "DATABASE = whisper\n"
        "ENABLE_TAGS = False\n"
        f"{limits}"
        "LINE_RECEIVER_INTERFACE = 127.0.0.1\n"
        f"LINE_RECEIVER_PORT = {line}\n"
        "PICKLE_RECEIVER_INTERFACE = 127.0.0.1\n"
        f"PICKLE_RECEIVER_PORT = {pickle}\n"
        "CACHE_QUERY_INTERFACE = 127.0.0.1\n"
        f"CACHE_QUERY_PORT = {query}\n"
        "ENABLE_UDP_LISTENER = True\n"
        "UDP_RECEIVER_INTERFACE = 127.0.0.1\n"
        f"UDP_RECEIVER_PORT = {udp}\n"
        "USE_FLOW_CONTROL = True\n"
        "LOG_UPDATES = False\n"
        "LOG_CREATES = False\n"
        "LOG_LISTENER_CONN_SUCCESS = False\n"
        "CACHE_WRITE_STRATEGY = sorted\n"
        "WHISPER_AUTOFLUSH = False\n"
        "WHISPER_FALLOCATE_CREATE = True\n"
    )


@contextlib.contextmanager
def carbon_cache(
    root: Path,
    *,
    schemas: str = DEFAULT_SCHEMAS,
    aggregation: str = DEFAULT_AGGREGATION,
    throttled: bool = False,
    ready_timeout_seconds: float = 60.0,
) -> Iterator[CarbonCache]:
    """Run carbon-cache in the foreground with its files under ``root``; stop it on exit."""
    _require_debian_graphite()
    binary = find_binary("carbon-cache")
    conf_dir = root / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "storage-schemas.conf").write_text(schemas)
    (conf_dir / "storage-aggregation.conf").write_text(aggregation)
    storage = root / "storage"
    (storage / "whisper").mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _attempt in range(START_ATTEMPTS):  # a free port can be taken between probe and bind
        line, pickle, query = free_port(), free_port(), free_port()
        udp = free_port(socket.SOCK_DGRAM)
        (conf_dir / "carbon.conf").write_text(
            _carbon_conf(root, line, pickle, query, udp, throttled)
        )
        (storage / "carbon-cache-a.pid").unlink(missing_ok=True)
        process = PeerProcess(
            "carbon-cache",
            [DEBIAN_PYTHON, binary, f"--config={conf_dir / 'carbon.conf'}", "--nodaemon", "start"],
            log_path=root / "carbon-cache.log",
            cwd=root,
            env=_clean_env(),
        )
        process.start()
        try:
            process.wait_ready(
                functools.partial(_all_open, (line, pickle, query)),
                timeout_seconds=ready_timeout_seconds,
                what=f"carbon-cache listening on {line}/{pickle}/{query}",
            )
        except PeerFailed as exc:
            last_error = exc
            continue
        try:
            yield CarbonCache(
                process, line, pickle, query, storage, storage / "whisper", conf_dir, udp
            )
        finally:
            process.stop()
        return
    raise PeerFailed(f"carbon-cache did not start in {START_ATTEMPTS} attempts: {last_error}")


def _web_settings(root: Path, whisper_dir: Path, cache_query_port: int) -> str:
    web = root / "web"
    return (
        '"""graphite-web settings generated by tests/peers/graphite.py."""\n'
        "SECRET_KEY = 'tidemark-differential-tests'\n"
        "TIME_ZONE = 'UTC'\n"
        "DEBUG = False\n"
        f"STORAGE_DIR = {str(whisper_dir.parent)!r}\n"
        f"WHISPER_DIR = {str(whisper_dir)!r}\n"
        f"STANDARD_DIRS = [{str(whisper_dir)!r}]\n"
        f"LOG_DIR = {str(web / 'log')!r}\n"
        f"INDEX_FILE = {str(web / 'index')!r}\n"
        f"CARBONLINK_HOSTS = ['127.0.0.1:{cache_query_port}']\n"
        "CARBONLINK_TIMEOUT = 5.0\n"
        "TAGDB = ''\n"
        "STORAGE_FINDERS = ('graphite.finders.standard.StandardFinder',)\n"
        "USE_WORKER_POOL = False\n"
        "LOG_RENDERING_PERFORMANCE = False\n"
        "LOG_CACHE_PERFORMANCE = False\n"
        "DEFAULT_XFILES_FACTOR = 0\n"
        "FUNCTION_PLUGINS = []\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', "
        f"'NAME': {str(web / 'graphite.db')!r}}}}}\n"
    )


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Debian's python: no venv, no inherited PYTHONPATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "DJANGO_SETTINGS_MODULE")
    }
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["TZ"] = "UTC"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def graphite_web(
    root: Path,
    *,
    whisper_dir: Path,
    cache_query_port: int,
    workers: int = 2,
    ready_timeout_seconds: float = 90.0,
) -> Iterator[GraphiteWeb]:
    """Run graphite-web under gunicorn reading ``whisper_dir`` and carbon's cache."""
    _require_debian_graphite()
    web = root / "web"
    (web / "log").mkdir(parents=True, exist_ok=True)
    whisper_dir.mkdir(parents=True, exist_ok=True)  # graphite-web only looks at dirs that exist
    (web / "tidemark_graphite_settings.py").write_text(
        _web_settings(root, whisper_dir, cache_query_port)
    )
    env = _clean_env(
        {
            "PYTHONPATH": str(web),
            "DJANGO_SETTINGS_MODULE": "graphite.settings",
            "GRAPHITE_SETTINGS_MODULE": "tidemark_graphite_settings",
        }
    )
    migrate = PeerProcess(
        "graphite-web migrate",
        [DEBIAN_PYTHON, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
        log_path=root / "graphite-migrate.log",
        cwd=web,
        env=env,
    )
    migrate.start()
    status = migrate.wait_exit(timeout_seconds=120)
    if status != 0:
        raise PeerFailed(f"graphite-web migrate failed ({status}):\n{migrate.log_tail()}")
    last_error: Exception | None = None
    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        process = PeerProcess(
            "graphite-web",
            [
                DEBIAN_PYTHON,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--timeout",
                "120",
                "--graceful-timeout",
                "5",
                "graphite.wsgi:application",
            ],
            log_path=root / "graphite-web.log",
            cwd=web,
            env=env,
        )
        process.start()
        url = f"http://127.0.0.1:{port}/metrics/find?query=*"
        try:
            process.wait_ready(
                functools.partial(_answers_200, url),
                timeout_seconds=ready_timeout_seconds,
                what=f"graphite-web answering {url}",
            )
        except PeerFailed as exc:
            last_error = exc
            continue
        try:
            yield GraphiteWeb(process, port)
        finally:
            process.stop()
        return
    raise PeerFailed(f"graphite-web did not start in {START_ATTEMPTS} attempts: {last_error}")


def _all_open(ports: tuple[int, ...]) -> bool:
    return all(tcp_open(port) for port in ports)


def _answers_200(url: str) -> bool:
    try:
        status, _ = http_get(url, timeout_seconds=10)
    except OSError:
        return False
    return status == 200


@contextlib.contextmanager
def graphite_stack(
    root: Path,
    *,
    schemas: str = DEFAULT_SCHEMAS,
    aggregation: str = DEFAULT_AGGREGATION,
    throttled: bool = False,
    web_workers: int = 2,
) -> Iterator[GraphiteStack]:
    """carbon-cache and graphite-web together, both stopped on exit."""
    with carbon_cache(
        root, schemas=schemas, aggregation=aggregation, throttled=throttled
    ) as carbon:
        with graphite_web(
            root,
            whisper_dir=carbon.whisper_dir,
            cache_query_port=carbon.cache_query_port,
            workers=web_workers,
        ) as web:
            yield GraphiteStack(carbon, web)
