"""Wire codec: typed messages with append-only tags, msgpack, length-prefixed frames."""

from synod.codec.frames import FRAME_BYTES_MAX_DEFAULT, FrameDecoder, frame
from synod.codec.kernel import ClientReply, ClientRequest, ErrorReply, Routed
from synod.codec.registry import (
    PROTOCOL_VERSION,
    TAG_RANGES,
    Message,
    UnknownMessageType,
    decode,
    encode,
    message,
    registered_messages,
)

__all__ = [
    "FRAME_BYTES_MAX_DEFAULT",
    "PROTOCOL_VERSION",
    "TAG_RANGES",
    "ClientReply",
    "ClientRequest",
    "ErrorReply",
    "FrameDecoder",
    "Message",
    "Routed",
    "UnknownMessageType",
    "decode",
    "encode",
    "frame",
    "message",
    "registered_messages",
]
