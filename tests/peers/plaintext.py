"""Sending Graphite plaintext lines, or carbon pickle frames, over TCP."""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Iterable, Sequence

__all__ = ["format_line", "pickle_frames", "send_bytes", "send_datagrams", "send_lines"]


def format_line(path: str, value: float, timestamp: int) -> str:
    """One plaintext line, ``path value timestamp\\n``, with the value in repr form."""
    return f"{path} {value!r} {timestamp}\n"


def pickle_frames(
    points: Sequence[tuple[str, tuple[float, float]]], *, per_frame: int = 500
) -> list[bytes]:
    """Carbon pickle frames: 4-byte big-endian length, then a protocol-2 pickled list of
    ``(path, (timestamp, value))``."""
    frames = []
    for start in range(0, len(points), per_frame):
        payload = pickle.dumps(list(points[start : start + per_frame]), protocol=2)
        frames.append(struct.pack("!L", len(payload)) + payload)
    return frames


def send_bytes(port: int, chunks: Iterable[bytes]) -> None:
    """Send raw chunks on one TCP connection to 127.0.0.1:port and close it cleanly."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass


def send_datagrams(port: int, lines: Sequence[str], *, lines_per_datagram: int = 20) -> int:
    """Send lines as UDP datagrams to 127.0.0.1:port; returns the number of datagrams."""
    count = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for start in range(0, len(lines), lines_per_datagram):
            sock.sendto(
                "".join(lines[start : start + lines_per_datagram]).encode(), ("127.0.0.1", port)
            )
            count += 1
    return count


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
