"""Basen BMS over RS485 ("wired", GHswitt/esphome-basen): sans-I/O codec. protocols.md §14.

Wire summary (9600 8N1):
- frame `7E addr cmd len data(len) chk 0D`, chk = (XOR ^ SUM) & 0xFF over 7E..data. Framed by LEN, never by
  the 0x0D terminator (0x0D is the high byte of cell voltages 3328..3583 mV). A request is a frame with
  len 0 (INFO: `7E 01 01 00 FE 0D`); a 1-byte reply is an error code.
- INFO reply: version 0x01; cell block (count, BE u16 per cell: bit 15 balancing, low 12 bits mV); then
  type/count/value blocks, values BE, 2 bytes wide for types <= 0x0A and 4 bytes for types >= 0x0B.

Confidence low-medium (one published frame). Pure: stdlib, ..codec, ..fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ...codec import BufferedAssembler, ChecksumError, Frame, FramingError, Reading, UnsupportedFrame, UsageError
from ..decode_util import decode_stream
from ..fields import Field

SOI: Final = 0x7E
EOI: Final = 0x0D
CMD_INFO: Final = 0x01
DEFAULT_ADDRESS: Final = 0x01
INFO_VERSION: Final = 0x01
MAX_LEN: Final = 0xF0  # GHswitt rejects longer

CELL_BALANCING: Final = 0x8000
CELL_MV_MASK: Final = 0x0FFF
WIDE_FROM: Final = 0x0B  # blocks of this type and above carry 4-byte values

B_CURRENT: Final = 0x02
B_TEMPERATURES: Final = 0x05
B_STATUS: Final = 0x06
CURRENT_ZERO: Final = 30000  # current = 300 - v/100 A (+ = charging)
TEMPERATURE_BIAS: Final = 50
T_MOS: Final = 0x40
T_AMBIENT: Final = 0x20

# Scalar blocks: type -> field over the block's first value (offset 2 = after type and count).
SCALAR_BLOCKS: Final[Mapping[int, Field]] = {
    0x03: Field("soc", 2, 2, scale=0.01),
    0x04: Field("charge", 2, 2, scale=0.01),
    0x07: Field("cycles", 2, 2),
    0x08: Field("voltage", 2, 2, scale=0.01),
    0x09: Field("soh", 2, 2, scale=0.01),
}

# Status block (type 0x06) bytes: flags that are states, not problems.
STATUS_CHARGING: Final = (3, 0x01)
STATUS_DISCHARGING: Final = (3, 0x02)
STATUS_CHARGE_MOS_OFF: Final = (2, 0x10)
STATUS_DISCHARGE_MOS_OFF: Final = (2, 0x20)
# Alarm and fault bits (byte, bit, code), GHswitt's status table without its informational entries.
STATUS_ALARMS: Final[tuple[tuple[int, int, str], ...]] = (
    (0, 0x08, "cell_undervoltage_fault"), (0, 0x10, "voltage_line_break"), (0, 0x20, "charge_mos_fault"),
    (0, 0x40, "discharge_mos_fault"), (0, 0x80, "voltage_sensor_fault"), (1, 0x01, "ntc_disconnected"),
    (1, 0x02, "adc_fault"), (1, 0x04, "reverse_battery"), (1, 0x08, "overheat_fault"), (1, 0x10, "battery_locked"),
    (1, 0x20, "communication_timeout"), (1, 0x40, "sn_code_failure"), (1, 0x80, "secondary_trip_protection"),
    (2, 0x01, "discharge_overtemperature_protection"), (2, 0x02, "discharge_undertemperature_protection"),
    (2, 0x40, "afe_communication_timeout"), (3, 0x04, "short_circuit_protection"),
    (3, 0x08, "overcurrent_protection"), (3, 0x40, "charge_overtemperature_protection"),
    (3, 0x80, "charge_undertemperature_protection"), (4, 0x01, "ambient_undertemperature_protection"),
    (4, 0x02, "ambient_overtemperature_protection"), (4, 0x10, "soc_low_protection"),
    (5, 0x20, "mos_overtemperature_protection"), (5, 0x40, "mos_undertemperature_protection"),
    (5, 0x80, "charge_temperature_too_low"), (7, 0x01, "soc_low_alarm_2"), (7, 0x02, "vibration_alarm"),
    (7, 0x08, "aerosol_fault"), (7, 0x10, "soh_low_alarm"), (7, 0x20, "ntc_short_circuit"),
    (7, 0x40, "temperature_difference_alarm"), (7, 0x80, "system_lock"), (8, 0x01, "ambient_overtemperature_alarm"),
    (8, 0x02, "ambient_undertemperature_alarm"), (8, 0x04, "mos_overtemperature_alarm"), (8, 0x08, "soc_low_alarm"),
    (8, 0x10, "cell_voltage_difference_alarm"), (8, 0x20, "discharge_overtemperature_alarm"),
    (8, 0x40, "discharge_undertemperature_alarm"), (9, 0x01, "cell_overvoltage_alarm"),
    (9, 0x02, "cell_undervoltage_alarm"), (9, 0x04, "pack_overvoltage_alarm"), (9, 0x08, "pack_undervoltage_alarm"),
    (9, 0x10, "charge_overcurrent_alarm"), (9, 0x20, "discharge_overcurrent_alarm"),
    (9, 0x40, "charge_overtemperature_alarm"), (9, 0x80, "charge_undertemperature_alarm"),
)


def checksum(data: bytes) -> int:
    x = s = 0
    for b in data:
        x ^= b
        s += b
    return (x ^ s) & 0xFF


def build_frame(command: int, data: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    if len(data) > MAX_LEN or not (0 <= command <= 0xFF and 0 <= address <= 0xFF):
        raise UsageError("Basen RS485 frame: byte-sized command/address, at most 240 data bytes")
    head = bytes((SOI, address, command, len(data))) + data
    return head + bytes((checksum(head), EOI))


def build_request(command: int = CMD_INFO, address: int = DEFAULT_ADDRESS) -> bytes:
    return build_frame(command, b"", address)


REQUEST_INFO: Final = build_request()  # 7e 01 01 00 fe 0d


class BasenUartAssembler(BufferedAssembler):
    """Bytes in, frames out: Frame(kind=cmd, raw, address). len 0 = a request (or its echo on the bus)."""

    NAME = "Basen RS485 frame"

    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = buf.find(SOI)
        if not self._at_frame_start(start):
            return None
        if len(buf) < 4:
            return None
        if buf[3] > MAX_LEN:
            length = buf[3]
            del buf[:1]
            raise FramingError(f"Basen RS485 length {length} too long")
        total = 4 + buf[3] + 2
        if len(buf) < total:
            return None
        if buf[total - 1] != EOI:
            del buf[:1]
            raise FramingError("Basen RS485 frame does not end with 0D")
        expected, actual = checksum(bytes(buf[: total - 2])), buf[total - 2]
        if expected != actual:
            del buf[:1]
            raise ChecksumError(expected, actual, "Basen RS485 frame")
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(raw[2], raw, raw[1])



def data_of(frame: Frame) -> bytes:
    return frame.raw[4:-2]


def blocks(data: bytes, start: int) -> list[tuple[int, int, bytes]]:
    """The type/count/value blocks from `start`: (type, count, block bytes incl. type and count)."""
    out = []
    i = start
    while i < len(data):
        if i + 2 > len(data):
            raise FramingError(f"Basen INFO: dangling byte at {i}")
        kind, count = data[i], data[i + 1]
        size = 2 + count * (4 if kind >= WIDE_FROM else 2)
        if i + size > len(data):
            raise FramingError(f"Basen INFO: block {kind:#04x} x{count} overruns the frame")
        out.append((kind, count, data[i : i + size]))
        i += size
    return out


def status_alarms(status: bytes) -> list[str]:
    return [code for byte, bit, code in STATUS_ALARMS if byte < len(status) and status[byte] & bit]


def status_problem_code(status: bytes) -> int:
    """The alarm/fault bits of the status bytes as one integer (byte n at bits 8n..8n+7)."""
    return sum(bit << (8 * byte) for byte, bit, _ in STATUS_ALARMS if byte < len(status) and status[byte] & bit)


def _flag(status: bytes, where: tuple[int, int]) -> bool:
    byte, bit = where
    return byte < len(status) and bool(status[byte] & bit)


def signed_current(current: float, status: bytes | None) -> float:
    """The status flags are authoritative for the sign when exactly one of charging / discharging is set."""
    if status is None:
        return current
    charging, discharging = _flag(status, STATUS_CHARGING), _flag(status, STATUS_DISCHARGING)
    if charging and not discharging:
        return abs(current)
    if discharging and not charging:
        return -abs(current)
    return current


def decode_info(frame: Frame) -> Reading:
    if frame.kind != CMD_INFO:
        raise UnsupportedFrame(f"not a Basen INFO reply: cmd {frame.kind:#04x}")
    data = data_of(frame)
    if len(data) < 2:
        raise UnsupportedFrame(f"Basen INFO reply with {len(data)} data bytes (error code?)")
    if data[0] != INFO_VERSION:
        raise UnsupportedFrame(f"Basen INFO version {data[0]:#04x}")
    n = data[1]
    if 2 + 2 * n > len(data):
        raise FramingError(f"Basen INFO: {n} cells overrun the frame")
    words = [int.from_bytes(data[2 + 2 * i : 4 + 2 * i], "big") for i in range(n)]
    r: Reading = {
        "cell_voltages": [(w & CELL_MV_MASK) / 1000 for w in words],
        "balancing": [i for i, w in enumerate(words) if w & CELL_BALANCING],
    }
    current: float | None = None
    status: bytes | None = None
    for kind, count, block in blocks(data, 2 + 2 * n):
        if count == 0:
            continue
        field = SCALAR_BLOCKS.get(kind)
        if field is not None:
            r[field.key] = field.convert(field.raw(block, "big"))
        elif kind == B_CURRENT:
            current = round((CURRENT_ZERO - int.from_bytes(block[2:4], "big")) / 100, 2)
        elif kind == B_TEMPERATURES:
            temps = []
            for i in range(count):
                subtype, value = block[2 + 2 * i], block[3 + 2 * i] - TEMPERATURE_BIAS
                if subtype == T_MOS:
                    r["mos_temperature"] = value
                elif subtype != T_AMBIENT:  # ambient is not a pack sensor
                    temps.append(value)
            r["temperatures"] = temps
        elif kind == B_STATUS:
            status = block[2:]
    if current is not None:
        r["current"] = signed_current(current, status)
    if status is not None:
        r["switches"] = {"charge": not _flag(status, STATUS_CHARGE_MOS_OFF),
                         "discharge": not _flag(status, STATUS_DISCHARGE_MOS_OFF)}
        r["alarms"] = status_alarms(status)
        r["problem_code"] = status_problem_code(status)
    return r


def decode_frame(frame: Frame) -> dict[str, Any]:
    data = data_of(frame)
    if not data:
        return {"frame_type": frame.kind, "request": True, "address": frame.address}
    if len(data) == 1:
        return {"frame_type": frame.kind, "error_code": data[0], "address": frame.address}
    return {"frame_type": frame.kind, **decode_info(frame)}


def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """`bmsbus decode basen_uart HEX...`: one dict per frame, `{"error": ...}` for bad bytes."""
    asm = BasenUartAssembler()
    return decode_stream(chunks, asm, decode_frame, finish=True)
