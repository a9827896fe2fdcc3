"""Tour steps for the foundation: the wire codec, the simulator, the runtime."""

from __future__ import annotations

from synod.codec import ClientRequest, ErrorReply, FrameDecoder, decode, encode, frame
from synod.core import RemoteProtocolError
from synod.demo.tour import Step, StepContext


def _codec(context: StepContext) -> None:
    request = ClientRequest(request_id=1, body=ErrorReply(code="demo", detail="hello"))
    wire = encode(request)
    context.check("a typed message survives encode/decode", decode(wire) == request,
                  f"{len(wire)} bytes of msgpack")
    refused = 0
    for garbage in (b"\xff\x00garbage", wire[:-3], b"\x93\x01\x09\x90"):
        try:
            decode(garbage)
        except RemoteProtocolError:
            refused += 1
    context.check("garbage, truncated and unknown-type bytes are refused", refused == 3,
                  f"{refused} of 3 refused with RemoteProtocolError")
    decoder = FrameDecoder(frame_bytes_max=1024)
    stream = frame(wire) + frame(wire)
    frames = decoder.feed(stream[:5]) + decoder.feed(stream[5:])
    context.check("length-prefixed frames reassemble", frames == [wire, wire])


STEPS = (
    Step(
        title="wire codec",
        explanation="""
Every message in synod is a frozen dataclass with a type tag, encoded as msgpack
(never pickle). Anything that is not a well-formed message is refused with
RemoteProtocolError and nothing else, so a bad peer cannot crash a node.""",
        run=_codec,
    ),
)
