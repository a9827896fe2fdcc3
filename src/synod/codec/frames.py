"""Length-prefixed frames for stream transports.

A frame is a 4-byte big-endian unsigned length followed by that many payload bytes.
``FrameDecoder`` is sans-IO: feed it bytes as they arrive, it returns the complete
payloads. A declared length over ``frame_bytes_max`` raises ``RemoteProtocolError``
at once, before any of the payload is buffered, so a hostile peer cannot make us
allocate a huge buffer.
"""

from __future__ import annotations

import struct

from synod.core.errors import LocalProtocolError, RemoteProtocolError

FRAME_BYTES_MAX_DEFAULT = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
HEADER_BYTES = _HEADER.size


def frame(payload: bytes, *, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> bytes:
    """Prefix ``payload`` with its length."""
    if len(payload) > frame_bytes_max:
        raise LocalProtocolError(f"frame of {len(payload)} bytes over the maximum {frame_bytes_max}")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder of length-prefixed frames."""

    __slots__ = ("_buffer", "frame_bytes_max")

    def __init__(self, *, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        self.frame_bytes_max = frame_bytes_max
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame now complete, in order."""
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= HEADER_BYTES:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.frame_bytes_max:
                raise RemoteProtocolError(
                    f"frame of {length} bytes over the maximum {self.frame_bytes_max}"
                )
            end = HEADER_BYTES + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[HEADER_BYTES:end]))
            del self._buffer[:end]
        return frames

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)
