"""PACE "paceic" ASCII protocol over RS232 / RS485 (protocol version 0x25): sans-I/O codec. protocols.md §15.

Wire summary (9600 8N1): `~ VER ADR CID1 CID2 LENGTH INFO CHKSUM \\r`, every field hex-ASCII.
- LENGTH = LCHKSUM nibble + 12-bit LENID (ASCII chars of INFO); LCHKSUM = (-(sum of the LENID nibbles)) & 0xF.
- CHKSUM = two's complement (mod 65536) of the ASCII sum of everything between `~` and CHKSUM.
- CID1 0x46 (battery); CID2 is the command in a request (0x42 analog, 0x44 status) and the return code in a
  reply (0x00 = OK).
- Frames end with CR: the assembler splits on `\\r` (a new `~` before it means the previous frame was cut).

Note: aiobmsble's `pace_bms` is a different, binary BLE protocol. Pure: stdlib, ..codec, ..fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from string import hexdigits
from typing import Any, Final

from ...codec import BufferedAssembler, ChecksumError, Frame, FramingError, Reading, UnsupportedFrame, UsageError
from ..decode_util import decode_stream

SOI: Final = ord("~")
EOI: Final = ord("\r")
VERSION: Final = 0x25
CID1_BATTERY: Final = 0x46
CMD_ANALOG: Final = 0x42
CMD_STATUS: Final = 0x44
DEFAULT_ADDRESS: Final = 0x01
HEADER_CHARS: Final = 13  # `~` + VER ADR CID1 CID2 (2 each) + LENGTH (4)
MIN_FRAME: Final = HEADER_CHARS + 4 + 1
MAX_FRAME: Final = 1 + 12 + 0xFFF + 4 + 1

KELVIN_OFFSET: Final = 2730  # temperatures are 0.1 K
MOS_SENSOR: Final = 4  # temps[4] = MOS, temps[5] = environment (not a pack sensor)
AMBIENT_SENSOR: Final = 5

# Status system byte.
SYS_CHARGING: Final = 0x20
SYS_DISCHARGING: Final = 0x08
SYS_DISCHARGE_MOS: Final = 0x04
SYS_CHARGE_MOS: Final = 0x02

_HEX: Final = frozenset(hexdigits.encode())


def length_field(info_chars: int) -> int:
    if not 0 <= info_chars <= 0xFFF:
        raise UsageError(f"PACE INFO of {info_chars} chars")
    lchk = (-((info_chars >> 8) + (info_chars >> 4 & 0xF) + (info_chars & 0xF))) & 0xF
    return lchk << 12 | info_chars


def frame_checksum(body: bytes) -> int:
    return (-sum(body)) & 0xFFFF


def build_frame(cid2: int, info: bytes = b"", address: int = DEFAULT_ADDRESS, version: int = VERSION,
                cid1: int = CID1_BATTERY) -> bytes:
    """A frame with INFO bytes hex-encoded (what a request or a reply carries)."""
    info_hex = info.hex().upper().encode()
    body = f"{version:02X}{address:02X}{cid1:02X}{cid2:02X}{length_field(len(info_hex)):04X}".encode() + info_hex
    return b"~" + body + f"{frame_checksum(body):04X}".encode() + b"\r"


def build_request(command: int, address: int = DEFAULT_ADDRESS) -> bytes:
    """Analog / status request: INFO = the pack address."""
    return build_frame(command, bytes((address,)), address)


REQUEST_ANALOG: Final = build_request(CMD_ANALOG)  # ~25014642E00201FD30\r
REQUEST_STATUS: Final = build_request(CMD_STATUS)  # ~25014644E00201FD2E\r


# --- frame assembler ---------------------------------------------------------------------------------

class PaceAssembler(BufferedAssembler):
    """Bytes in, frames out: Frame(kind=CID2 (command or return code), raw=ASCII frame, address=ADR)."""

    MAX_PENDING: Final = 2 * MAX_FRAME

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        if len(self._buf) > self.MAX_PENDING:
            start = self._buf.rfind(b"~")
            del self._buf[: start if start > 0 else len(self._buf) - self.MAX_PENDING]

    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = buf.find(b"~")
        if not self._at_frame_start(start):
            return None
        end = buf.find(b"\r")
        nxt = buf.find(b"~", 1, end if end > 0 else len(buf))
        if nxt > 0:
            del buf[:nxt]
            raise FramingError(f"truncated PACE frame: new frame after {nxt} chars")
        if end < 0:
            if len(buf) > MAX_FRAME:
                del buf[:1]
                raise FramingError("PACE frame without CR")
            return None
        raw = bytes(buf[: end + 1])
        del buf[: end + 1]
        body = raw[1:-5]
        if len(raw) < MIN_FRAME or any(c not in _HEX for c in raw[1:-1]):
            raise FramingError(f"malformed PACE frame of {len(raw)} chars")
        length = int(body[8:12], 16)
        lenid = length & 0xFFF
        if length_field(lenid) != length:
            raise FramingError(f"PACE LCHKSUM wrong in LENGTH {length:04X}")
        if len(body) != 12 + lenid:
            raise FramingError(f"PACE LENID {lenid} but INFO has {len(body) - 12} chars")
        expected, actual = frame_checksum(body), int(raw[-5:-1], 16)
        if expected != actual:
            raise ChecksumError(expected, actual, "PACE frame")
        return Frame(int(body[6:8], 16), raw, int(body[2:4], 16))

    def finish(self) -> None:
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            raise FramingError(f"truncated PACE frame at end of input: {n} chars")


def info_of(frame: Frame) -> bytes:
    """INFO as bytes."""
    return bytes.fromhex(frame.raw[13:-5].decode("ascii"))


# --- decoders ----------------------------------------------------------------------------------------

class _Reader:
    """Sequential reads of a PACE INFO field list (counts come from the data)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, signed: bool = False) -> int:
        if self.pos + size > len(self.data):
            raise FramingError(f"PACE INFO too short: need {self.pos + size} bytes, have {len(self.data)}")
        v = int.from_bytes(self.data[self.pos : self.pos + size], "big", signed=signed)
        self.pos += size
        return v


def _check_reply(frame: Frame) -> bytes:
    if frame.kind != 0:
        raise UnsupportedFrame(f"PACE return code {frame.kind:#04x}")
    return info_of(frame)


def decode_analog(frame: Frame) -> Reading:
    """Analog reply -> Reading. The current keeps the wire's s16 sign; apply_status_sign() fixes it from the
    status flags when both replies are at hand. SoC is remaining / full (the analog reply has no SoC)."""
    rd = _Reader(_check_reply(frame))
    rd.take(1)  # data flag (00)
    rd.take(1)  # pack address
    cells = [rd.take(2) / 1000 for _ in range(rd.take(1))]
    temps = [round((rd.take(2) - KELVIN_OFFSET) / 10, 1) for _ in range(rd.take(1))]
    current = rd.take(2, signed=True) / 100
    voltage = rd.take(2) / 1000
    charge = rd.take(2) / 100
    rd.take(1)  # user-defined byte (protocol variant; 3 = standard)
    capacity = rd.take(2) / 100
    cycles = rd.take(2)
    design = rd.take(2) / 100
    r: Reading = {
        "voltage": voltage, "current": current, "cell_voltages": cells, "charge": charge, "capacity": capacity,
        "design_capacity": design, "cycles": cycles,
        "temperatures": [t for i, t in enumerate(temps) if i not in (MOS_SENSOR, AMBIENT_SENSOR)],
    }
    if len(temps) > MOS_SENSOR:
        r["mos_temperature"] = temps[MOS_SENSOR]
    if capacity > 0:
        r["soc"] = round(min(100.0, 100 * charge / capacity), 1)
    return r


def decode_status(frame: Frame) -> dict[str, Any]:
    """Status reply -> raw flag bytes plus the Reading parts they give (switches, balancing, problem code)."""
    rd = _Reader(_check_reply(frame))
    rd.take(1)
    rd.take(1)
    cell_warnings = [rd.take(1) for _ in range(rd.take(1))]
    temperature_warnings = [rd.take(1) for _ in range(rd.take(1))]
    rd.take(1)  # charge current warning
    rd.take(1)  # total voltage warning
    rd.take(1)  # discharge current warning
    protect1, protect2, system, _config, fault = (rd.take(1) for _ in range(5))
    balancing = rd.take(2)
    warn1, warn2 = rd.take(1), rd.take(1)
    return {
        "system": system,
        "switches": {"charge": bool(system & SYS_CHARGE_MOS), "discharge": bool(system & SYS_DISCHARGE_MOS)},
        "balancing": [i for i in range(16) if balancing >> i & 1],
        # [batmon]: protect1 | (protect2 & ~0x80) << 8 | fault << 16
        "problem_code": protect1 | (protect2 & 0x7F) << 8 | fault << 16,
        "warnings": sum(1 for w in cell_warnings + temperature_warnings if w) + bool(warn1) + bool(warn2),
    }


def apply_status_sign(current: float, system: int) -> float:
    """The current's sign from the status flags (authoritative in [batmon]) when exactly one is set."""
    charging, discharging = bool(system & SYS_CHARGING), bool(system & SYS_DISCHARGING)
    if charging and not discharging:
        return abs(current)
    if discharging and not charging:
        return -abs(current)
    return current


def status_reading(status: dict[str, Any]) -> Reading:
    return {k: status[k] for k in ("switches", "balancing", "problem_code")}


def _looks_like_analog(info: bytes) -> bool:
    """Analog and status INFO start alike; the analog layout's implied length decides."""
    if len(info) < 4:
        return False
    n = info[2]
    if 3 + 2 * n >= len(info):
        return False
    t = info[3 + 2 * n]
    return len(info) >= 3 + 2 * n + 1 + 2 * t + 13


def decode_frame(frame: Frame) -> dict[str, Any]:
    info_chars = len(frame.raw) - 18
    head = {"frame_type": frame.kind, "address": frame.address}
    if frame.kind in (CMD_ANALOG, CMD_STATUS) and info_chars <= 2:
        return {**head, "request": True}
    if frame.kind != 0:
        return {**head, "return_code": frame.kind}
    info = info_of(frame)
    if _looks_like_analog(info):
        return {**head, "reply": "analog", **decode_analog(frame)}
    return {**head, "reply": "status", **decode_status(frame)}


def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """`bmsbus decode pace_uart HEX...`: one dict per frame, `{"error": ...}` for bad bytes."""
    asm = PaceAssembler()
    return decode_stream(chunks, asm, decode_frame, finish=True)
