"""JBD / Jiabaida / Xiaoxiang / Overkill: sans-I/O codec. protocols.md §6.

Request `DD [A5 read | 5A write] reg len data chk_hi chk_lo 77`, reply `DD reg status len data chk 77`;
chk = (0x10000 - sum) & 0xFFFF, over reg+len+data in a request but status+len+data in a reply. The same
frames travel over BLE (FF00/FF01/FF02, 20-byte notifications) and UART/RS485 (9600 8N1). Some recent
firmware wants an `FF AA` password exchange first (§6.6); those frames are recognised too (kind "auth").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ...checksums import jbd_complement, sum8
from ...codec import BufferedAssembler, ChecksumError, DeviceInfo, Frame, FramingError, Reading, UnsupportedFrame, UsageError, ascii_field
from ..decode_util import decode_stream, device_info_dict
from ..fields import Field, FieldTable, bits_set

START: Final = 0xDD
END: Final = 0x77
READ: Final = 0xA5
WRITE: Final = 0x5A
STATUS_OK: Final = 0x00
STATUS_ERROR: Final = 0x80
AUTH_HEADER: Final = b"\xff\xaa"
AUTH_PASSWORD: Final = 0x15
KIND_AUTH: Final = "auth"

REG_BASIC: Final = 0x03
REG_CELLS: Final = 0x04
REG_VERSION: Final = 0x05
REG_ERROR_COUNTERS: Final = 0xAA
REG_MOS: Final = 0xE1
REG_ENTER_FACTORY: Final = 0x00
REG_EXIT_FACTORY: Final = 0x01

BASIC_MIN_LEN: Final = 23  # up to and including the NTC count
KELVIN_OFFSET: Final = 2731  # 0.1 K
UNIT_FLAG: Final = 0x80  # in the control byte after the temperatures: 100 mA / 100 mAh units
MOS_OFF_BITS: Final[Mapping[str, int]] = {"charge": 0x01, "discharge": 0x02}  # 0xE1 data: 1 = switch OFF
FET_BITS: Final[Mapping[str, int]] = {"charge": 0x01, "discharge": 0x02}  # 0x03 byte 20: 1 = MOS on
LOCK_BIT: Final = 12  # protection bit while 0xE1 holds a MOS off

PROTECTION_ALARMS: Final[tuple[str | None, ...]] = (
    "cell_overvoltage", "cell_undervoltage", "pack_overvoltage", "pack_undervoltage", "charge_overtemperature",
    "charge_undertemperature", "discharge_overtemperature", "discharge_undertemperature", "charge_overcurrent",
    "discharge_overcurrent", "short_circuit", "afe_fault", "mos_software_lock", "charge_timeout", None, None,
)


# 0xAA: 11 u16 BE event counters (then 2 bytes of unknown meaning), for `bmsbus decode`.
ERROR_COUNTERS: Final = (
    "short_circuit", "charge_overcurrent", "discharge_overcurrent", "cell_overvoltage", "cell_undervoltage",
    "charge_overtemperature", "charge_undertemperature", "discharge_overtemperature", "discharge_undertemperature",
    "pack_overvoltage", "pack_undervoltage",
)


# --- request builders ---------------------------------------------------------------------------------

def build_request(register: int, data: bytes = b"", *, write: bool = False) -> bytes:
    if not 0 <= register <= 0xFF or len(data) > 0xFF:
        raise UsageError(f"bad JBD register {register:#x} / {len(data)} data bytes")
    body = bytes((register, len(data))) + data
    return bytes((START, WRITE if write else READ)) + body + jbd_complement(body).to_bytes(2, "big") + bytes((END,))


def mos_data(charge_on: bool, discharge_on: bool) -> bytes:
    """0xE1 data `00 XX`: XX bit0 = 1 switches the charge MOS OFF, bit1 the discharge MOS."""
    xx = (0 if charge_on else MOS_OFF_BITS["charge"]) | (0 if discharge_on else MOS_OFF_BITS["discharge"])
    return bytes((0, xx))


def build_mos(charge_on: bool, discharge_on: bool) -> bytes:
    """0xE1: both MOS states in one write."""
    return build_request(REG_MOS, mos_data(charge_on, discharge_on), write=True)


def build_auth(password: str) -> bytes:
    secret = password.encode("ascii")
    if not secret or len(secret) > 0xFF:
        raise UsageError("JBD password must be 1..255 ASCII characters")
    body = bytes((AUTH_PASSWORD, len(secret))) + secret
    return AUTH_HEADER + body + bytes((sum8(body),))


def build_reply(register: int, data: bytes = b"", status: int = STATUS_OK) -> bytes:
    """A BMS reply (for emulators)."""
    body = bytes((status, len(data))) + data
    return bytes((START, register)) + body + jbd_complement(body).to_bytes(2, "big") + bytes((END,))


def build_auth_reply(command: int, result: int) -> bytes:
    body = bytes((command, 1, result))
    return AUTH_HEADER + body + bytes((sum8(body),))


# --- assembler ----------------------------------------------------------------------------------------

class JbdAssembler(BufferedAssembler):
    """Replies (`DD ...`, kind = register) and auth frames (`FF AA ...`, kind "auth"); everything else
    is junk. A reply with a status other than 00/80 cannot be one (that also rejects our own requests)."""


    def _start(self) -> int:
        buf = self._buf
        for i, b in enumerate(buf):
            if b == START or (b == AUTH_HEADER[0] and (i + 1 == len(buf) or buf[i + 1] == AUTH_HEADER[1])):
                return i
        return -1

    def next_frame(self) -> Frame | None:
        buf = self._buf
        self._raise_overflow()
        start = self._start()
        if not self._at_frame_start(start):
            return None
        if buf[0] == START:
            return self._reply()
        return self._auth()

    def _reply(self) -> Frame | None:
        buf = self._buf
        if len(buf) >= 3 and buf[2] not in (STATUS_OK, STATUS_ERROR):
            status = buf[2]
            del buf[:1]
            raise FramingError(f"JBD status byte {status:#04x}")
        if len(buf) < 4:
            return None
        total = buf[3] + 7
        if len(buf) < total:
            return None
        if buf[total - 1] != END:
            del buf[:1]
            raise FramingError("JBD frame without 0x77 terminator")
        expected = jbd_complement(buf[2 : total - 3])
        actual = int.from_bytes(buf[total - 3 : total - 1], "big")
        if expected != actual:
            del buf[:1]
            raise ChecksumError(expected, actual, "JBD reply")
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(kind=raw[1], raw=raw)

    def _auth(self) -> Frame | None:
        buf = self._buf
        if len(buf) < 4:
            return None
        total = buf[3] + 5
        if len(buf) < total:
            return None
        expected = sum8(buf[2 : total - 1])
        if expected != buf[total - 1]:
            actual = buf[total - 1]
            del buf[:1]
            raise ChecksumError(expected, actual, "JBD auth frame")
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(kind=KIND_AUTH, raw=raw)


def payload(frame: Frame) -> bytes:
    if frame.kind == KIND_AUTH:
        return frame.raw[4:-1]
    return frame.raw[4:-3]


def status(frame: Frame) -> int:
    return frame.raw[2]


# --- decoders -----------------------------------------------------------------------------------------

def _basic_table(scale: float) -> FieldTable:
    return FieldTable((
        Field("voltage", 0, 2, scale=0.01),
        Field("current", 2, 2, signed=True, scale=scale),
        Field("charge", 4, 2, scale=scale),
        Field("design_capacity", 6, 2, scale=scale),
        Field("cycles", 8, 2),
        Field("soc", 19, 1),
    ))


BASIC_FIELDS: Final[Mapping[bool, FieldTable]] = {False: _basic_table(0.01), True: _basic_table(0.1)}


def _basic_data(frame: Frame) -> bytes:
    if frame.kind != REG_BASIC:
        raise UnsupportedFrame(f"JBD register {frame.kind!r} is not basic info")
    if status(frame) != STATUS_OK:
        raise UnsupportedFrame(f"JBD answered 0x03 with error status {status(frame):#04x}")
    data = payload(frame)
    if len(data) < BASIC_MIN_LEN or len(data) < BASIC_MIN_LEN + 2 * data[22]:
        raise UnsupportedFrame(f"JBD basic info of {len(data)} bytes is too short")
    return data


def unit_100ma(data: bytes) -> bool:
    """The control byte after the temperatures (when the frame has one) with bit 7 set: current and
    capacities in 100 mA / 100 mAh."""
    flag_at = BASIC_MIN_LEN + 2 * data[22]
    return len(data) > flag_at and bool(data[flag_at] & UNIT_FLAG)


def protection_alarms(bits: int) -> list[str]:
    return [name for bit in bits_set(bits, 16) if (name := PROTECTION_ALARMS[bit])]


def decode_basic(frame: Frame) -> Reading:
    data = _basic_data(frame)
    out: Reading = dict(BASIC_FIELDS[unit_100ma(data)].decode(data))
    cells = data[21]
    ntcs = data[22]
    balance = int.from_bytes(data[12:14], "big") | int.from_bytes(data[14:16], "big") << 16
    out["balancing"] = bits_set(balance, min(cells, 32))  # doc mapping: bit 0 of bytes 12-13 = cell 1
    protection = int.from_bytes(data[16:18], "big")
    out["problem_code"] = protection
    out["alarms"] = protection_alarms(protection)
    out["switches"] = {name: bool(data[20] & bit) for name, bit in FET_BITS.items()}
    if ntcs:
        out["temperatures"] = [round((int.from_bytes(data[23 + 2 * i : 25 + 2 * i], "big") - KELVIN_OFFSET) / 10, 1)
                               for i in range(ntcs)]
    if out["soc"] > 100:
        del out["soc"]
    return out


def basic_counts(frame: Frame) -> tuple[int, int]:
    """(cell count, NTC count) from a 0x03 reply."""
    data = _basic_data(frame)
    return data[21], data[22]


def decode_production_date(raw: int) -> str | None:
    year, month, day = 2000 + (raw >> 9), (raw >> 5) & 0x0F, raw & 0x1F
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{year:04d}-{month:02d}-{day:02d}"


def basic_info(frame: Frame) -> DeviceInfo:
    """Software version (byte 18, nibbles) and production date (bytes 10-11) from a 0x03 reply."""
    data = _basic_data(frame)
    info = DeviceInfo(manufacturer="JBD", sw_version=f"{data[18] >> 4}.{data[18] & 0x0F}")
    if (date := decode_production_date(int.from_bytes(data[10:12], "big"))) is not None:
        info.extra["production_date"] = date
    return info


def decode_cells(frame: Frame) -> Reading:
    if frame.kind != REG_CELLS or status(frame) != STATUS_OK:
        raise UnsupportedFrame(f"not a JBD cell-voltage reply (register {frame.kind!r})")
    data = payload(frame)
    return {"cell_voltages": [int.from_bytes(data[i : i + 2], "big") / 1000 for i in range(0, len(data) - 1, 2)]}


def decode_version(frame: Frame) -> str:
    if frame.kind != REG_VERSION or status(frame) != STATUS_OK:
        raise UnsupportedFrame(f"not a JBD version reply (register {frame.kind!r})")
    return ascii_field(payload(frame))


def error_counters(frame: Frame) -> dict[str, int]:
    """0xAA: how often each protection has tripped."""
    data = payload(frame)
    if frame.kind != REG_ERROR_COUNTERS or len(data) < 2 * len(ERROR_COUNTERS):
        raise UnsupportedFrame(f"not a JBD error-counter reply (register {frame.kind!r}, {len(data)} bytes)")
    return {name: int.from_bytes(data[2 * i : 2 * i + 2], "big") for i, name in enumerate(ERROR_COUNTERS)}


def auth_result(frame: Frame) -> tuple[int, int]:
    """(command, result byte) of an FF AA reply; result 0 = accepted."""
    data = payload(frame)
    return frame.raw[2], data[0] if data else 0xFF


# --- `bmsbus decode` ------------------------------------------------------------------------------------

def describe(frame: Frame) -> dict[str, Any]:
    if frame.kind == KIND_AUTH:
        command, result = auth_result(frame)
        return {"frame_type": KIND_AUTH, "command": command, "accepted": result == 0}
    out: dict[str, Any] = {"frame_type": f"{frame.kind:#04x}", "status": status(frame)}
    if status(frame) != STATUS_OK:
        return {**out, "error_status": True}
    if frame.kind == REG_BASIC:
        data = _basic_data(frame)
        tail = data[BASIC_MIN_LEN + 2 * data[22] :]
        return {**out, **decode_basic(frame), **device_info_dict(basic_info(frame)), "cell_count": data[21],
                "ntc_count": data[22], "unit_100ma": unit_100ma(data), "tail": tail.hex()}
    if frame.kind == REG_CELLS:
        return {**out, **decode_cells(frame)}
    if frame.kind == REG_VERSION:
        return {**out, "model": decode_version(frame)}
    if frame.kind == REG_ERROR_COUNTERS:
        return {**out, "error_counters": error_counters(frame)}
    return {**out, "data": payload(frame).hex()}


def decode_chunks(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    return decode_stream(chunks, JbdAssembler(), describe)
