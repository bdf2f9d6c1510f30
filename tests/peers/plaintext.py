"""Sending Graphite plaintext lines over TCP."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence

__all__ = ["format_line", "send_lines"]


def format_line(path: str, value: float, timestamp: int) -> str:
    """One plaintext line, ``path value timestamp\\n``, with the value in repr form."""
    return f"{path} {value!r} {timestamp}\n"


def send_lines(port: int, lines: Iterable[str] | Sequence[str], *, chunk_lines: int = 5000) -> int:
    """Send lines on one TCP connection to 127.0.0.1:port, close it cleanly; returns the count."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= chunk_lines:
                sock.sendall("".join(batch).encode())
                sent += len(batch)
                batch.clear()
        if batch:
            sock.sendall("".join(batch).encode())
            sent += len(batch)
        sock.shutdown(socket.SHUT_WR)
        # Wait for the server to close its side so every byte has been read.
        sock.settimeout(10)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
    return sent
