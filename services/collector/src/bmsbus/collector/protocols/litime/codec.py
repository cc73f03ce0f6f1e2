"""LiTime / Redodo (also Power Queen, Starry Sea, some ECO-WORTHY "T-12"): sans-I/O codec. protocols.md §10.

Wire summary (BLE FFE0, notify FFE1, write FFE2):
- host -> BMS: fixed request `00 00 04 01 13 55 AA 17`.
- BMS -> host: `00 00 <len> ..` of len + 4 bytes (105 for the status reply, len 0x65), last byte sum8 of all
  the others. Values LE.
- The `00 00 00 00` trap: four zero bytes are a "frame" of len 0 whose sum8 is right. The assembler requires
  len >= 4 (the shortest real frame, the request) and the status decoder requires the full 105 bytes.

Pure: stdlib and ..codec/..checksums/..fields only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ...checksums import sum8
from ...codec import BufferedAssembler, ChecksumError, Frame, FramingError, Reading, UnsupportedFrame
from ..decode_util import decode_stream
from ..fields import Field, FieldTable

HEAD: Final = b"\x00\x00"
HEADER_LEN: Final = 3
MIN_LEN_BYTE: Final = 4  # the request (00 00 04 ..) is the shortest frame
KIND_REQUEST: Final = 0x13
KIND_STATUS: Final = 0x93  # request kind | 0x80
STATUS_LEN: Final = 105
MAX_CELLS: Final = 16
CELLS_OFFSET: Final = 16


def build_frame(kind: int, body: bytes) -> bytes:
    """`00 00 len 01 kind 55 AA` + body + sum8: the status poll (kind 0x13, no body) and the replies (for
    emulators)."""
    head = HEAD + bytes((len(body) + 4, 0x01, kind)) + b"\x55\xaa" + body
    return head + bytes((sum8(head),))


REQUEST: Final = build_frame(KIND_REQUEST, b"")  # the fixed status poll: 00 00 04 01 13 55 AA 17


# --- frame assembler ---------------------------------------------------------------------------------

class LiTimeAssembler(BufferedAssembler):
    """Bytes in, frames out: Frame(kind=byte 4, raw) — 0x93 status replies, 0x13 host requests.

    Resync: junk before `00 00` is dropped (FramingError); a length byte below 4 or a bad sum8 drops one byte
    and raises (FramingError / ChecksumError), so a stream of zeros can never produce a frame.
    """

    NAME = "LiTime frame"

    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = buf.find(HEAD)
        if start < 0:
            keep = 1 if buf[-1:] == b"\x00" else 0
            n = len(buf) - keep
            if n:
                del buf[:n]
                raise FramingError(f"junk: dropped {n} bytes")
            return None
        if start > 0:
            del buf[:start]
            raise FramingError(f"junk before frame: dropped {start} bytes")
        if len(buf) < HEADER_LEN:
            return None
        total = buf[2] + 4
        if buf[2] < MIN_LEN_BYTE:
            del buf[:1]
            raise FramingError(f"LiTime length byte {total - 4} is too short for a frame")
        if len(buf) < total:
            return None
        expected, actual = sum8(bytes(buf[: total - 1])), buf[total - 1]
        if expected != actual:
            del buf[:1]
            raise ChecksumError(expected, actual, "LiTime frame")
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(raw[4], raw)



# --- field table -------------------------------------------------------------------------------------

STATUS_FIELDS: Final = FieldTable((
    Field("voltage", 12, 4, scale=0.001),  # [batmon] u32; [aio] u16 (bytes 14-15 are 0 in captures)
    Field("current", 48, 4, signed=True, scale=0.001),  # + = charging
    Field("temperature", 52, 2, signed=True),  # cell temperature ([batmon])
    Field("mos_temperature", 54, 2, signed=True),  # [batmon]; [aio]: generic sensor 2
    Field("charge", 62, 2, scale=0.01),
    Field("capacity", 64, 4, scale=0.01),  # [batmon] u16 "capacity", [aio] u32 "design"
    Field("heater", 68, 4),
    Field("problem_code", 76, 8),
    Field("soc", 90, 2),
    Field("soh", 92, 4),
    Field("cycles", 96, 4),
    Field("cycle_charge", 100, 4),  # total charge throughput, Ah ([batmon])
), byteorder="little")
CELL: Final = Field("cell", CELLS_OFFSET, 2)  # at + 2n, mV, 0 = absent


def decode_status(frame: Frame) -> Reading:
    raw = frame.raw
    if frame.kind != KIND_STATUS:
        raise UnsupportedFrame(f"not a LiTime status reply: kind {frame.kind:#04x}")
    if len(raw) < STATUS_LEN:
        raise FramingError(f"LiTime status reply of {len(raw)} bytes (need {STATUS_LEN})")
    v = STATUS_FIELDS.decode(raw)
    mv = [CELL.raw(raw, "little", 2 * i) for i in range(MAX_CELLS)]
    while mv and mv[-1] == 0:
        mv.pop()
    heater = bool(v.pop("heater"))
    temperature = v.pop("temperature")
    return {**v, "temperatures": [temperature], "cell_voltages": [x / 1000 for x in mv],
            "switches": {"heater": heater}}


def decode_frame(frame: Frame) -> dict[str, Any]:
    if frame.kind == KIND_REQUEST:
        return {"frame_type": KIND_REQUEST, "request": True}
    return {"frame_type": frame.kind, **decode_status(frame)}


def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """`bmsbus decode litime HEX...`: one dict per frame, `{"error": ...}` for bad bytes."""
    asm = LiTimeAssembler()
    return decode_stream(chunks, asm, decode_frame, finish=True)
