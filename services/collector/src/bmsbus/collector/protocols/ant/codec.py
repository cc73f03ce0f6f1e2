"""ANT BMS, the "new" 7E A1 protocol over BLE: sans-I/O codec. protocols.md §7.

Frame: `7E A1 func addr_lo addr_hi len data... crc_lo crc_hi AA 55` with CRC-16/MODBUS over bytes
1..len+5. Host requests carry a value in the `len` byte and no data (status `7e a1 01 00 00 be ...`), except
the optional authentication (func 0x23) whose `len` is the length of the ASCII secret that follows.
Replies use func + 0x10 (0x11 status, 0x12 device info, 0x61 write acknowledgement). The device-info
reply is longer than its `len` byte says (syssi: 6 more bytes after the CRC before AA 55).

Status reply (little-endian): the cell and temperature blocks have variable size, so everything after
them sits at `pos + B` with B = 2 x (cells + sensors). Current is s16 x 0.1 A, + = charging; temperatures
are s16 °C (-40 = no sensor).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ...checksums import crc16_modbus
from ...codec import BufferedAssembler, ChecksumError, DeviceInfo, Frame, FramingError, Reading, UnsupportedFrame, UsageError, ascii_field
from ..decode_util import decode_stream, device_info_dict
from ..fields import Field, FieldTable, bits_set

HEADER: Final = b"\x7e\xa1"
TAIL: Final = b"\xaa\x55"
MIN_LEN: Final = 10  # header 6 + CRC 2 + tail 2

FUNC_STATUS: Final = 0x01
FUNC_DEVICE_INFO: Final = 0x02
FUNC_AUTH: Final = 0x23
FUNC_WRITE: Final = 0x51
REPLY_OFFSET: Final = 0x10  # reply func = request func + 0x10 (0x11 status, 0x12 device info, 0x61 write)
REQUEST_FUNCS: Final = frozenset({FUNC_STATUS, FUNC_DEVICE_INFO, FUNC_AUTH, FUNC_WRITE})
REPLY_STATUS: Final = FUNC_STATUS + REPLY_OFFSET
REPLY_DEVICE_INFO: Final = FUNC_DEVICE_INFO + REPLY_OFFSET
DEVICE_INFO_ADDRESS: Final = 0x026C
DEVICE_INFO_LEN: Final = 0x20
STATUS_VALUE: Final = 0xBE
AUTH_ADDRESS: Final = 0x6A01
DEVICE_INFO_EXTRA: Final = 16  # how far past its CRC the device-info reply may run before AA 55

# Write registers (func 0x51): switch name -> (register to turn on, register to turn off).
SWITCH_REGISTERS: Final[Mapping[str, tuple[int, int]]] = {
    "charge": (0x0006, 0x0004),
    "discharge": (0x0003, 0x0001),
    "balance": (0x000D, 0x000E),
}
BUZZER_REGISTERS: Final = (0x001E, 0x001F)

TEMP_COUNT_AT: Final = 8
CELL_COUNT_AT: Final = 9
BATTERY_STATUS_AT: Final = 7
CELLS_AT: Final = 34
MAX_CELLS: Final = 32
MAX_TEMPS: Final = 8
ABSENT_TEMPERATURE: Final = -40
BALANCING_BIT: Final = 0x04
MOS_ON: Final = 0x01

# Absolute offsets before the +B shift (aiobmsble, syssi).
STATUS_FIELDS: Final = FieldTable((
    Field("voltage", 38, 2, scale=0.01),
    Field("current", 40, 2, signed=True, scale=0.1),
    Field("soc", 42, 2),
    Field("soh", 44, 2),
    Field("design_capacity", 50, 4, scale=1e-6),  # µAh
    Field("charge", 54, 4, scale=1e-6),  # µAh
    Field("cycle_charge", 58, 4, scale=0.001),  # mAh discharged in total
    Field("power", 62, 4, signed=True, scale=1.0),
    Field("uptime", 66, 4),  # total runtime, s (syssi)
), byteorder="little")
STATUS_END: Final = 74  # through the u32 balance bitmask at 70
STATUS_DETAILS: Final = FieldTable((
    Field("mos_code_46", 46, 1), Field("mos_code_47", 47, 1), Field("balancer_code", 48, 1),
    Field("max_cell_voltage", 74, 2, scale=0.001), Field("max_cell", 76, 2),
    Field("min_cell_voltage", 78, 2, scale=0.001), Field("min_cell", 80, 2),
    Field("delta_cell_voltage", 82, 2, scale=0.001),
), byteorder="little")
# MOS status codes: byte 46 (+B) is the DISCHARGE MOS, 47 the CHARGE MOS (batmon-ha's order; aiobmsble and
# esphome-ant-bms read them the other way round). The two real full-charge frames (batmon's 8S LFP capture
# at 3.54 V/cell, esphome-ant-bms's documented 14S NMC frame at 4.11 V/cell; both I = 0, SoC 96-100 %,
# protection bit 0x02) carry 46 = 1, 47 = 2: code 2 is "cell overvoltage" on the charge side and "cell
# undervoltage" on the discharge side, and only this order makes them say "charge MOS off: cell
# overvoltage". `charge_first=True` decodes the other order. protocols.md §7.2; docs/bms/ant.md.
DISCHARGE_CODE_AT: Final = 46
CHARGE_CODE_AT: Final = 47
BALANCER_AT: Final = 48
BALANCE_MASK_AT: Final = 70

BATTERY_STATUS: Final[Mapping[int, str]] = {0: "unknown", 1: "idle", 2: "charge", 3: "discharge", 4: "standby",
                                             5: "error"}
# MOS status codes that are not a problem (protocols.md §7.2, after aiobmsble).
CHARGE_CODES_OK: Final = frozenset({0x00, 0x01, 0x04, 0x0B, 0x0F})
DISCHARGE_CODES_OK: Final = frozenset({0x00, 0x01, 0x04, 0x0F})
# Names of the problem codes (syssi/esphome-ant-bms status tables).
CHARGE_CODE_ALARMS: Final[Mapping[int, str]] = {
    0x02: "cell_overvoltage", 0x03: "charge_overcurrent", 0x05: "pack_overvoltage", 0x06: "charge_overtemperature",
    0x07: "mos_overtemperature", 0x08: "current_abnormal", 0x09: "cell_wire_disconnected",
    0x0A: "board_overtemperature", 0x0C: "charge_mos_open_failed", 0x0D: "discharge_mos_fault",
    0x0E: "charge_waiting", 0x10: "cell_overvoltage_level2", 0x11: "charge_undertemperature",
    0x12: "cell_voltage_difference", 0x14: "self_test_fault",
}
DISCHARGE_CODE_ALARMS: Final[Mapping[int, str]] = {
    0x02: "cell_undervoltage", 0x03: "discharge_overcurrent", 0x05: "pack_undervoltage",
    0x06: "discharge_overtemperature", 0x07: "mos_overtemperature", 0x08: "current_abnormal",
    0x09: "cell_wire_disconnected", 0x0A: "board_overtemperature", 0x0C: "short_circuit",
    0x0D: "discharge_mos_fault", 0x0E: "discharge_mos_open_failed", 0x10: "cell_undervoltage_level2",
    0x11: "discharge_undertemperature", 0x12: "cell_voltage_difference", 0x13: "self_test_fault",
}


# --- request builders ---------------------------------------------------------------------------------

def build_frame(func: int, address: int, value: int, data: bytes = b"") -> bytes:
    """A frame: requests put a value in the length byte (and no data); replies and auth the data length."""
    if not 0 <= func <= 0xFF or not 0 <= address <= 0xFFFF or not 0 <= value <= 0xFF:
        raise UsageError(f"bad ANT frame func {func:#x} address {address:#x} value {value:#x}")
    body = bytes((HEADER[1], func)) + address.to_bytes(2, "little") + bytes((value,)) + data
    return HEADER[:1] + body + crc16_modbus(body).to_bytes(2, "little") + TAIL


def build_status_request() -> bytes:
    return build_frame(FUNC_STATUS, 0, STATUS_VALUE)


def build_device_info_request() -> bytes:
    return build_frame(FUNC_DEVICE_INFO, DEVICE_INFO_ADDRESS, DEVICE_INFO_LEN)


def build_auth(secret: str) -> bytes:
    data = secret.encode("ascii")
    if not data or len(data) > 0xFF:
        raise UsageError("ANT secret must be 1..255 ASCII characters")
    return build_frame(FUNC_AUTH, AUTH_ADDRESS, len(data), data)


def build_switch(name: str, on: bool) -> bytes:
    try:
        register = SWITCH_REGISTERS[name][0 if on else 1]
    except KeyError:
        raise UsageError(f"ANT has no switch {name!r}") from None
    return build_frame(FUNC_WRITE, register, 0)


def build_reply(func: int, address: int, data: bytes) -> bytes:
    """A BMS reply (for emulators)."""
    if len(data) > 0xFF:
        raise UsageError(f"ANT reply data of {len(data)} bytes")
    return build_frame(func + REPLY_OFFSET, address, len(data), data)


# --- assembler ----------------------------------------------------------------------------------------

def is_request(func: int) -> bool:
    return func in REQUEST_FUNCS


class AntAssembler(BufferedAssembler):
    """Replies and, for emulators and echoes, host requests (REQUEST_FUNCS: no data, except auth); kind = func."""


    def _start(self) -> int:
        buf = self._buf
        i = buf.find(HEADER)
        if i >= 0:
            return i
        return len(buf) - 1 if buf[-1:] == HEADER[:1] else -1  # a header split across chunks

    def next_frame(self) -> Frame | None:
        buf = self._buf
        self._raise_overflow()
        start = self._start()
        if not self._at_frame_start(start):
            return None
        if len(buf) < 6:
            return None
        func = buf[2]
        data_len = 0 if is_request(func) and func != FUNC_AUTH else buf[5]
        crc_at = 6 + data_len
        if len(buf) < crc_at + 4:
            return None
        expected = crc16_modbus(bytes(buf[1:crc_at]))
        actual = int.from_bytes(buf[crc_at : crc_at + 2], "little")
        if expected != actual:
            del buf[:1]
            raise ChecksumError(expected, actual, "ANT frame")
        total = self._total(crc_at + 2, func)
        if total is None:
            return None
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(kind=func, raw=raw)

    def _total(self, tail_at: int, func: int) -> int | None:
        buf = self._buf
        if buf[tail_at : tail_at + 2] == TAIL:
            return tail_at + 2
        if func != REPLY_DEVICE_INFO:
            del buf[:1]
            raise FramingError("ANT frame without AA 55 tail")
        end = buf.find(TAIL, tail_at, tail_at + DEVICE_INFO_EXTRA + 2)
        if end >= 0:
            return end + 2
        if len(buf) < tail_at + DEVICE_INFO_EXTRA + 2:
            return None
        del buf[:1]
        raise FramingError("ANT device-info frame without AA 55 tail")


# --- decoders -----------------------------------------------------------------------------------------

def _shift(raw: bytes) -> int:
    return 2 * (raw[CELL_COUNT_AT] + raw[TEMP_COUNT_AT])


def _status_raw(frame: Frame) -> bytes:
    raw = frame.raw
    if frame.kind != REPLY_STATUS:
        raise UnsupportedFrame(f"ANT func {frame.kind!r} is not a status reply")
    if raw[CELL_COUNT_AT] > MAX_CELLS or raw[TEMP_COUNT_AT] > MAX_TEMPS:
        raise UnsupportedFrame(f"ANT status with {raw[CELL_COUNT_AT]} cells / {raw[TEMP_COUNT_AT]} sensors")
    if len(raw) - 4 < STATUS_END + _shift(raw):
        raise UnsupportedFrame(f"ANT status reply of {len(raw)} bytes is too short")
    return raw


def _s16(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 2], "little", signed=True)


def mos_alarms(charge_code: int, discharge_code: int) -> tuple[list[str], int]:
    """Alarm names and problem code (abnormal discharge code << 8 | abnormal charge code) of the two MOS
    status codes."""
    alarms: list[str] = []
    problem = 0
    if charge_code not in CHARGE_CODES_OK:
        problem |= charge_code
        alarms.append(CHARGE_CODE_ALARMS.get(charge_code, f"charge_mos_fault_{charge_code}"))
    if discharge_code not in DISCHARGE_CODES_OK:
        problem |= discharge_code << 8
        name = DISCHARGE_CODE_ALARMS.get(discharge_code, f"discharge_mos_fault_{discharge_code}")
        if name not in alarms:
            alarms.append(name)
    return alarms, problem


def decode_status(frame: Frame, *, charge_first: bool = False) -> Reading:
    """The status reply. MOS status codes: byte 46 (+B) discharge, 47 charge (see DISCHARGE_CODE_AT);
    `charge_first` reads 46 as the charge and 47 as the discharge MOS (aiobmsble's / esphome-ant-bms's order)."""
    raw = _status_raw(frame)
    cells, sensors = raw[CELL_COUNT_AT], raw[TEMP_COUNT_AT]
    b = _shift(raw)
    out: Reading = dict(STATUS_FIELDS.decode(raw, base=b))
    out["cell_voltages"] = [int.from_bytes(raw[CELLS_AT + 2 * i : CELLS_AT + 2 * i + 2], "little") / 1000
                            for i in range(cells)]
    temps_at = CELLS_AT + 2 * cells
    temps = [float(_s16(raw, temps_at + 2 * i)) for i in range(sensors)]
    if any(t != ABSENT_TEMPERATURE for t in temps):
        out["temperatures"] = [t for t in temps if t != ABSENT_TEMPERATURE]
    mos = _s16(raw, temps_at + 2 * sensors)
    if mos != ABSENT_TEMPERATURE:
        out["mos_temperature"] = float(mos)
    charge_code, discharge_code = raw[CHARGE_CODE_AT + b], raw[DISCHARGE_CODE_AT + b]
    if charge_first:
        charge_code, discharge_code = discharge_code, charge_code
    out["switches"] = {"charge": charge_code == MOS_ON, "discharge": discharge_code == MOS_ON,
                       "balance": bool(raw[BALANCER_AT + b] & BALANCING_BIT)}
    out["alarms"], out["problem_code"] = mos_alarms(charge_code, discharge_code)
    mask = int.from_bytes(raw[BALANCE_MASK_AT + b : BALANCE_MASK_AT + b + 4], "little")
    out["balancing"] = bits_set(mask, cells)
    if out["soc"] > 100:
        del out["soc"]
    if out["soh"] > 100:
        del out["soh"]
    return out


def decode_device_info(frame: Frame) -> DeviceInfo:
    if frame.kind != REPLY_DEVICE_INFO or len(frame.raw) < 38 + 4:
        raise UnsupportedFrame(f"not an ANT device-info reply (func {frame.kind!r}, {len(frame.raw)} bytes)")
    hw = ascii_field(frame.raw[6:22]) or None
    sw = ascii_field(frame.raw[22:38]) or None
    return DeviceInfo(manufacturer="ANT", model=hw, hw_version=hw, sw_version=sw)


# --- `bmsbus decode` ------------------------------------------------------------------------------------

def describe(frame: Frame) -> dict[str, Any]:
    raw = frame.raw
    func = int(frame.kind)
    out: dict[str, Any] = {"frame_type": f"{func:#04x}", "address": int.from_bytes(raw[3:5], "little")}
    if is_request(func):
        return {**out, "request": True, "value": raw[5]}
    if func == REPLY_STATUS:
        details = STATUS_DETAILS.decode(_status_raw(frame), base=_shift(raw))
        temps_at = CELLS_AT + 2 * raw[CELL_COUNT_AT]
        return {**out, "battery_status": BATTERY_STATUS.get(raw[BATTERY_STATUS_AT], "unknown"),
                "cell_count": raw[CELL_COUNT_AT], "temperature_count": raw[TEMP_COUNT_AT],
                "balancer_temperature": float(_s16(raw, temps_at + 2 * raw[TEMP_COUNT_AT] + 2)),
                "protection_bits": raw[10:18].hex(), "warning_bits": raw[18:26].hex(),
                **details, **decode_status(frame)}
    if func == REPLY_DEVICE_INFO:
        return {**out, **device_info_dict(decode_device_info(frame))}
    return {**out, "data": raw[6 : 6 + raw[5]].hex()}


def decode_chunks(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    return decode_stream(chunks, AntAssembler(), describe)
