"""Supervolt / E&J Technology (also AG Automotive, Chins/Meritsun, Fliteboard "libatt"): sans-I/O codec.
protocols.md §8.

Wire summary (ASCII over NUS or FF01/FF02):
- frame `:` + hex-ASCII + 2 hex checksum chars + `~`. Checksum = (sum of the ASCII chars between `:` and the
  checksum) & 0xFF ^ 0xFF. Payload byte k = ASCII [1+2k : 3+2k]: addr (0), cmd (1; reply = cmd | 0x80),
  version (2), length (3-4) = total ASCII characters including `:` and `~`.
- requests: realtime `:000250000E03~` (reply 0x82, 128 chars, or 140 chars on single-frame devices),
  capacity `:001031000E05~` (reply 0x90, 30 chars).
- the BLE module injects `AT\\r\\n` between notifications: dropped silently (it cannot be part of a frame).

Pure: stdlib and ..codec/..checksums only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from string import hexdigits
from typing import Any, Final

from ...codec import (
    BufferedAssembler,
    ChecksumError,
    CodecError,
    Frame,
    FramingError,
    Reading,
    UnsupportedFrame,
    UsageError,
)
from ..decode_util import decode_stream
from ..fields import Field, FieldTable, bits_set

HEAD: Final = ord(":")
TAIL: Final = ord("~")
AT_NOISE: Final = b"AT\r\n"
HEADER_CHARS: Final = 11  # `:` + addr, cmd, version (2 each) + length (4)
MIN_FRAME: Final = 14  # a request: header + checksum + `~`
MAX_FRAME: Final = 512

CMD_REALTIME: Final = 0x02
CMD_CAPACITY: Final = 0x10
REPLY_FLAG: Final = 0x80
KIND_REALTIME: Final = CMD_REALTIME | REPLY_FLAG  # 0x82
KIND_CAPACITY: Final = CMD_CAPACITY | REPLY_FLAG  # 0x90

REALTIME_CHARS: Final = 0x80  # 128: two-command devices
SINGLE_FRAME_CHARS: Final = 0x8C  # 140: realtime reply that carries the capacity triple too
CAPACITY_CHARS: Final = 0x1E  # 30
MAX_CELLS: Final = 16

_HEX: Final = frozenset(hexdigits.encode())


def ascii_checksum(body: bytes) -> int:
    """E&J checksum over the ASCII characters between `:` and the checksum."""
    return (sum(body) & 0xFF) ^ 0xFF


# --- request builders --------------------------------------------------------------------------------

def build_frame(address: int, command: int, version: int, payload: bytes = b"") -> bytes:
    """A complete ASCII frame; the length field is computed from the payload."""
    if not (0 <= address <= 0xFF and 0 <= command <= 0xFF and 0 <= version <= 0xFF):
        raise UsageError("address, command and version are single bytes")
    total = 1 + 2 * (5 + len(payload)) + 2 + 1
    if total > MAX_FRAME:
        raise UsageError(f"E&J frame of {total} chars is too long")
    body = f"{address:02X}{command:02X}{version:02X}{total:04X}".encode() + payload.hex().upper().encode()
    return b":" + body + f"{ascii_checksum(body):02X}".encode() + b"~"


def build_request(command: int) -> bytes:
    """Requests as the vendor app sends them: version 0x50 (realtime) / 0x31 (capacity), no payload."""
    version = 0x50 if command == CMD_REALTIME else 0x31
    return build_frame(0x00, command, version)


REQUEST_REALTIME: Final = build_request(CMD_REALTIME)  # b":000250000E03~"
REQUEST_CAPACITY: Final = build_request(CMD_CAPACITY)  # b":001031000E05~"


def payload_of(frame: Frame) -> bytes:
    """The hex-decoded bytes of a frame, header included, checksum byte last."""
    return bytes.fromhex(frame.raw[1:-1].decode("ascii"))


# --- frame assembler ---------------------------------------------------------------------------------

class SupervoltAssembler(BufferedAssembler):
    """Bytes in, frames out: Frame(kind=cmd byte, raw=ASCII frame, address=addr byte).

    Framing is by the length field (ASCII [7:11]), which must point at a `~`. Junk before `:` is dropped
    and reported as FramingError; `AT\\r\\n` is dropped silently. `verify_checksum=False` accepts frames
    with any checksum (devices named `libattU*` send none, protocols.md §8).
    """

    MAX_PENDING: Final = 4096

    def __init__(self, *, verify_checksum: bool = True) -> None:
        super().__init__()
        self.verify_checksum = verify_checksum

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk.replace(AT_NOISE, b"")
        if len(self._buf) > self.MAX_PENDING:
            # Keep only the newest frame start; what came before cannot complete a bounded frame.
            start = self._buf.rfind(b":")
            drop = start if start > 0 else len(self._buf) - self.MAX_PENDING
            del self._buf[:drop]

    def _drop(self, n: int, error: CodecError) -> CodecError:
        del self._buf[:n]
        return error

    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = buf.find(b":")
        if start < 0:
            if buf:
                n = len(buf)
                raise self._drop(n, FramingError(f"junk: dropped {n} bytes ({bytes(buf[:16])!r})"))
            return None
        if start > 0:
            raise self._drop(start, FramingError(f"junk before frame: dropped {start} bytes"))
        head = bytes(buf[1:HEADER_CHARS])
        if any(c not in _HEX for c in head):
            raise self._drop(1, FramingError(f"bad E&J header {head!r}"))
        if len(buf) < HEADER_CHARS:
            return None
        total = int(head[6:10], 16)
        if total < MIN_FRAME or total > MAX_FRAME or total % 2:
            raise self._drop(1, FramingError(f"bad E&J length field {total}"))
        # A frame cut short by a new `:` is reported as soon as the new start arrives.
        nxt = buf.find(b":", 1, total)
        if nxt > 0:
            raise self._drop(nxt, FramingError(f"truncated E&J frame: new frame after {nxt} chars"))
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        if raw[-1] != TAIL:
            raise self._drop(1, FramingError(f"E&J frame of {total} chars does not end with '~'"))
        if any(c not in _HEX for c in raw[1:-1]):
            raise self._drop(total, FramingError("non-hex characters inside an E&J frame"))
        expected, actual = ascii_checksum(raw[1:-3]), int(raw[-3:-1], 16)
        del buf[:total]
        if self.verify_checksum and expected != actual:
            raise ChecksumError(expected, actual, "E&J frame")
        return Frame(int(raw[3:5], 16), raw, int(raw[1:3], 16))

    def finish(self) -> None:
        """End of input: report a half-received frame (then forget it)."""
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            raise FramingError(f"truncated E&J frame at end of input: {n} chars")


# --- field tables ------------------------------------------------------------------------------------

CELLS_OFFSET: Final = 12
TEMPERATURE_OFFSET: Final = 48  # 4 bytes, raw - 40 °C; only the first is a pack sensor ([aio], real frames)
TEMPERATURE_BIAS: Final = 40

# Raw words the decoder combines (current = charge - discharge; bitfields).
REALTIME_RAW: Final = FieldTable((
    Field("charge_current", 44, 2, scale=0.01),
    Field("discharge_current", 46, 2, scale=0.01),
    Field("working_state", 52, 2),
    Field("balance_mask", 55, 2),
))
REALTIME_FIELDS: Final = FieldTable((
    Field("temperature", TEMPERATURE_OFFSET, 1, bias=TEMPERATURE_BIAS),
    Field("cycles", 57, 2),  # discharge count; [aio] reports it as cycles
    Field("soc", 61, 1),
))
# Single-frame (140-char) realtime replies and the capacity reply carry the same triple, ÷10 Ah.
SINGLE_FRAME_FIELDS: Final = FieldTable((
    Field("charge", 62, 2, scale=0.1),
    Field("capacity", 64, 2, scale=0.1),
    Field("design_capacity", 66, 2, scale=0.1),
))
CAPACITY_FIELDS: Final = FieldTable((
    Field("charge", 7, 2, scale=0.1),
    Field("capacity", 9, 2, scale=0.1),
    Field("design_capacity", 11, 2, scale=0.1),
))

# Working state (u16 at 52), [batmon] after WoMoAtor: bit -> meaning.
WS_CHARGING: Final = 0x0001
WS_DISCHARGING: Final = 0x0002
WS_DISCHARGE_FET: Final = 0x1000  # [aio]: byte 52 bit 0x10
WS_CHARGE_FET: Final = 0x2000  # [aio]: byte 52 bit 0x20
WS_DISCHARGE_SWITCH: Final = 0x4000
WS_CHARGE_SWITCH: Final = 0x8000
WS_PROBLEM_MASK: Final = 0x0FFC  # [aio] problem_code
WS_ALARMS: Final[tuple[tuple[int, str], ...]] = (
    (0x0004, "overcharge_protection"),
    (0x0008, "overdischarge_protection"),
    (0x0010, "overcharged"),
    (0x0020, "short_circuit"),
    (0x0040, "discharge_protection_1"),
    (0x0080, "discharge_protection_2"),
    (0x0100, "charge_overtemperature"),
    (0x0200, "charge_undertemperature"),
    (0x0400, "discharge_overtemperature"),
    (0x0800, "discharge_undertemperature"),
)


def alarm_codes(working_state: int) -> list[str]:
    return [code for bit, code in WS_ALARMS if working_state & bit]


# --- decoders ----------------------------------------------------------------------------------------

def is_request(frame: Frame) -> bool:
    """A host request: header only (14 chars)."""
    return len(frame.raw) == MIN_FRAME


def is_reply(frame: Frame, command: int) -> bool:
    """A reply to `command`. Like [aio], the reply flag 0x80 is not required (batmon's fixture lacks it)."""
    return not is_request(frame) and int(frame.kind) & ~REPLY_FLAG == command


def _cells(data: bytes) -> list[float]:
    mv = list(struct.unpack_from(f">{MAX_CELLS}H", data, CELLS_OFFSET))
    while mv and mv[-1] == 0:
        mv.pop()
    return [v / 1000 for v in mv]


def decode_realtime(frame: Frame) -> Reading:
    """A 0x82 reply (128 or 140 chars) -> Reading. Pack voltage is not on the wire: it is the cell sum."""
    if not is_reply(frame, CMD_REALTIME):
        raise UnsupportedFrame(f"not an E&J realtime reply: cmd {frame.kind:#04x}, {len(frame.raw)} chars")
    data = payload_of(frame)
    if len(frame.raw) not in (REALTIME_CHARS, SINGLE_FRAME_CHARS):
        raise UnsupportedFrame(f"E&J realtime reply of {len(frame.raw)} chars")
    cells = _cells(data)
    raw = REALTIME_RAW.decode(data)
    ws = int(raw["working_state"])
    fields = REALTIME_FIELDS.decode(data)
    r: Reading = {
        "voltage": round(sum(cells), 3),
        "current": round(raw["charge_current"] - raw["discharge_current"], 2),
        "cell_voltages": cells,
        "temperatures": [fields.pop("temperature")],
        **fields,
        "balancing": [i for i in bits_set(int(raw["balance_mask"]), 16) if i < len(cells)],
        "problem_code": ws & WS_PROBLEM_MASK,
        "alarms": alarm_codes(ws),
        # Read-only MOS states (the protocol has no write command).
        "switches": {"charge": bool(ws & WS_CHARGE_FET), "discharge": bool(ws & WS_DISCHARGE_FET)},
    }
    if len(frame.raw) == SINGLE_FRAME_CHARS:
        r.update(SINGLE_FRAME_FIELDS.decode(data))
    return r


def working_state(frame: Frame) -> int:
    return int(REALTIME_RAW.decode(payload_of(frame))["working_state"])


def has_capacity(frame: Frame) -> bool:
    """True for a single-frame realtime reply (no capacity request needed)."""
    return is_reply(frame, CMD_REALTIME) and len(frame.raw) == SINGLE_FRAME_CHARS


def decode_capacity(frame: Frame) -> Reading:
    if not is_reply(frame, CMD_CAPACITY) or len(frame.raw) != CAPACITY_CHARS:
        raise UnsupportedFrame(f"not an E&J capacity reply: cmd {frame.kind:#04x}, {len(frame.raw)} chars")
    return dict(CAPACITY_FIELDS.decode(payload_of(frame)))


DECODERS: Final = {CMD_REALTIME: decode_realtime, CMD_CAPACITY: decode_capacity}


def decode_frame(frame: Frame) -> dict[str, Any]:
    """Any frame -> JSON-able dict (`frame_type` = cmd byte; requests decode to their command)."""
    if is_request(frame):
        return {"frame_type": frame.kind, "request": True, "address": frame.address}
    decoder = DECODERS.get(int(frame.kind) & ~REPLY_FLAG)
    if decoder is None:
        raise UnsupportedFrame(f"E&J command {frame.kind:#04x}")
    return {"frame_type": frame.kind, **decoder(frame)}


def decode(chunks: Iterable[bytes], *, verify_checksum: bool = True) -> list[dict[str, Any]]:
    """`bmsbus decode supervolt HEX...`: one dict per frame, `{"error": ...}` for bad bytes."""
    asm = SupervoltAssembler(verify_checksum=verify_checksum)
    return decode_stream(chunks, asm, decode_frame, finish=True)
