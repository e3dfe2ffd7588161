"""The framing between the kernel and its container helper.

One stream socket (a socketpair), frames of `!IBI` (payload length, kind,
request id) then the payload.  Requests and replies are JSON (kind JSON);
a running cell's output travels as raw bytes (kinds STDOUT and STDERR) so
that nothing is decoded twice and a partial UTF-8 sequence survives the
cut between two chunks.  Every frame names its request, so the kernel can
drop what arrives late for a request it gave up on.
"""

from __future__ import annotations

import json
import socket
import struct

HEADER = struct.Struct("!IBI")
JSON, STDOUT, STDERR = 0, 1, 2
MAX_FRAME = 64 << 20  # a reply larger than this is a bug, not data


class ProtocolError(Exception):
    """The peer sent something that is not a frame."""


def send(sock: socket.socket, kind: int, request: int, payload: bytes) -> None:
    sock.sendall(HEADER.pack(len(payload), kind, request) + payload)


def send_json(sock: socket.socket, request: int, message: dict) -> None:
    send(sock, JSON, request, json.dumps(message).encode())


class FrameReader:
    """Accumulates bytes from the socket and yields whole frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def frames(self) -> list[tuple[int, int, bytes | dict]]:
        out: list[tuple[int, int, bytes | dict]] = []
        while len(self._buffer) >= HEADER.size:
            length, kind, request = HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME or kind not in (JSON, STDOUT, STDERR):
                raise ProtocolError(f"bad frame header (length {length}, kind {kind})")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[HEADER.size:end])
            del self._buffer[:end]
            out.append((kind, request, json.loads(payload) if kind == JSON else payload))
        return out
