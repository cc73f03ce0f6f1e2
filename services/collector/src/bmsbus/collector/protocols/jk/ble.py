"""JK BMS over BLE (JK02_24S, JK02_32S, JK04): sans-I/O codec. protocols.md §1.

Wire summary:
- host -> BMS: 20-byte command `AA 55 90 EB cmd len value(u32 LE / float32 LE) 00.. sum8`.
- BMS -> host: 300-byte frame `55 AA EB 90 type counter payload.. sum8` (type 0x01 settings, 0x02 cell
  info, 0x03 device info, 0x05 logbook), and the 20-byte acknowledgement `AA 55 90 EB C8 01 01 .. 44`.
- The BLE module injects `AT\\r\\n`, and echoes of our own commands appear on the notify characteristic.

The same 300-byte frames travel on the JK-PB RS485 bus (protocols.md §3) in the JK02_32S layout, so the
decoders here are shared with `pb.py`.

Pure: stdlib and ..codec/..checksums only. Decoders are tables of field rows; named transforms only for
bitfields (cells mask, sensor presence, alarms, switches).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ...checksums import sum8
from ...codec import (
    BufferedAssembler,
    ChecksumError,
    CodecError,
    DeviceInfo,
    Frame,
    FramingError,
    Reading,
    UnsupportedFrame,
    UsageError,
    ascii_field,
)

# --- constants -------------------------------------------------------------------------------------

RESPONSE_HEADER: Final = b"\x55\xaa\xeb\x90"
COMMAND_HEADER: Final = b"\xaa\x55\x90\xeb"
AT_NOISE: Final = b"AT\r\n"
FRAME_LEN: Final = 300
COMMAND_LEN: Final = 20

CMD_DEVICE_INFO: Final = 0x97
CMD_CELL_INFO: Final = 0x96  # settings once, then cell info streamed ~1/s
CMD_LOGBOOK: Final = 0xA1
ACK_COMMAND: Final = 0xC8

TYPE_SETTINGS: Final = 0x01
TYPE_CELL_INFO: Final = 0x02
TYPE_DEVICE_INFO: Final = 0x03
TYPE_LOGBOOK: Final = 0x05
FRAME_TYPES: Final = frozenset({TYPE_SETTINGS, TYPE_CELL_INFO, TYPE_DEVICE_INFO, TYPE_LOGBOOK})

# Frame.kind of the 20-byte AA 55 frames.
KIND_ACK: Final = "ack"
KIND_COMMAND: Final = "command"  # a host command (echo on the notify characteristic; what an emulator receives)

ABSENT_TEMPERATURE: Final = -2000  # 0.1 °C raw marker for "no sensor"


class Layout(StrEnum):
    JK02_24S = "jk02_24s"
    JK02_32S = "jk02_32s"
    JK04 = "jk04"


MAX_CELLS: Final[Mapping[Layout, int]] = {Layout.JK02_24S: 24, Layout.JK02_32S: 32, Layout.JK04: 24}


# --- request builders --------------------------------------------------------------------------------

def build_command(command: int, value: int = 0, length: int = 0) -> bytes:
    """A 20-byte host command; `value` is sent as u32 LE in bytes 6..9 (the low `length` bytes matter)."""
    if not 0 <= command <= 0xFF or not 0 <= length <= 4:
        raise UsageError(f"bad JK command {command:#x} / length {length}")
    body = COMMAND_HEADER + bytes((command, length)) + struct.pack("<I", value & 0xFFFFFFFF) + bytes(9)
    return body + bytes((sum8(body),))


def build_float_command(command: int, value: float) -> bytes:
    """A JK04 number write: IEEE754 float32 LE in bytes 6..9."""
    (as_int,) = struct.unpack("<I", struct.pack("<f", value))
    return build_command(command, as_int, 4)


REQUEST_DEVICE_INFO: Final = build_command(CMD_DEVICE_INFO)
REQUEST_CELL_INFO: Final = build_command(CMD_CELL_INFO)
REQUEST_LOGBOOK: Final = build_command(CMD_LOGBOOK)
ACK: Final = COMMAND_HEADER + bytes((ACK_COMMAND, 0x01, 0x01)) + bytes(12) + b"\x44"


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed 20-byte host command (what the emulator receives)."""

    command: int
    length: int
    value: int  # u32 LE of bytes 6..9, masked to `length` bytes

    @property
    def float_value(self) -> float:
        return float(struct.unpack("<f", struct.pack("<I", self.value))[0])


def parse_command(raw: bytes) -> Command:
    if len(raw) != COMMAND_LEN or raw[:4] != COMMAND_HEADER:
        raise FramingError(f"not a JK command frame: {raw[:4].hex()} / {len(raw)} bytes")
    if sum8(raw[:19]) != raw[19]:
        raise ChecksumError(sum8(raw[:19]), raw[19], "JK command")
    length = raw[5]
    (value,) = struct.unpack_from("<I", raw, 6)
    if 0 < length < 4:
        value &= (1 << (8 * length)) - 1
    return Command(raw[4], length, value)


# --- switches and settings ---------------------------------------------------------------------------

SWITCH_REGISTERS: Final[Mapping[Layout, Mapping[str, tuple[int, int]]]] = {
    # name -> (register, value length)
    Layout.JK02_24S: {"charge": (0x1D, 4), "discharge": (0x1E, 4), "balance": (0x1F, 4)},
    Layout.JK02_32S: {"charge": (0x1D, 4), "discharge": (0x1E, 4), "balance": (0x1F, 4), "heater": (0x27, 4),
                      "float_charge": (0x30, 4)},
    Layout.JK04: {"balance": (0x6C, 1)},
}


def build_switch(layout: Layout, name: str, on: bool) -> bytes:
    try:
        register, length = SWITCH_REGISTERS[layout][name]
    except KeyError:
        raise UsageError(f"{layout}: no writable switch {name!r}") from None
    return build_command(register, 1 if on else 0, length)


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """A writable number. JK02 sends round(value * factor) as u32; JK04 sends float32."""

    name: str
    unit: str
    description: str
    minimum: float
    maximum: float
    registers: Mapping[Layout, int]
    factor: int = 1000


SETTINGS: Final[tuple[SettingSpec, ...]] = (
    SettingSpec("cell_ovp", "V", "Cell over-voltage protection", 1.2, 4.5,
                {Layout.JK02_24S: 0x04, Layout.JK02_32S: 0x04}),
    SettingSpec("cell_uvp", "V", "Cell under-voltage protection", 1.2, 4.2,
                {Layout.JK02_24S: 0x02, Layout.JK02_32S: 0x02}),
    SettingSpec("balance_trigger_delta", "V", "Cell voltage difference that starts balancing", 0.001, 1.0,
                {Layout.JK02_24S: 0x06, Layout.JK02_32S: 0x06, Layout.JK04: 0x64}),
    SettingSpec("balance_start_voltage", "V", "Cell voltage above which the balancer may run", 1.2, 4.5,
                {Layout.JK02_24S: 0x26, Layout.JK02_32S: 0x22, Layout.JK04: 0x58}),
)
SETTINGS_BY_NAME: Final = {s.name: s for s in SETTINGS}


def settings_for(layout: Layout) -> tuple[SettingSpec, ...]:
    return tuple(s for s in SETTINGS if layout in s.registers)


def build_setting(layout: Layout, name: str, value: float) -> bytes:
    spec = SETTINGS_BY_NAME.get(name)
    if spec is None or layout not in spec.registers:
        raise UsageError(f"{layout}: no writable setting {name!r}; have {[s.name for s in settings_for(layout)]}")
    if not spec.minimum <= value <= spec.maximum:
        raise UsageError(f"{name}: {value} {spec.unit} outside {spec.minimum}..{spec.maximum}")
    register = spec.registers[layout]
    if layout is Layout.JK04:
        return build_float_command(register, value)
    return build_command(register, round(value * spec.factor), 4)


# --- frame assembler ---------------------------------------------------------------------------------

_HEADERS = (RESPONSE_HEADER, COMMAND_HEADER)
_HOLD = (RESPONSE_HEADER, COMMAND_HEADER, AT_NOISE)  # a buffer tail that may be the start of one of these


def _partial_tail(buf: bytes | bytearray) -> int:
    """Length of the longest buffer suffix that is a proper prefix of a header or of AT\\r\\n."""
    for n in range(min(3, len(buf)), 0, -1):
        tail = bytes(buf[-n:])
        if any(h.startswith(tail) for h in _HOLD):
            return n
    return 0


def _is_noise(junk: bytes) -> bool:
    return not junk.replace(AT_NOISE, b"")


class JkBleAssembler(BufferedAssembler):
    """Bytes in, frames out. Yields Frame(kind=1/2/3/5, raw=300 bytes), Frame(kind="ack", raw=20 bytes)
    and Frame(kind="command", raw=20 bytes) for host commands (echoes; the emulator's input).

    Resync rules: scan for `55 AA EB 90` / `AA 55 90 EB`; `AT\\r\\n` is dropped silently; other bytes
    between frames are dropped and reported as FramingError; a 300-byte frame with a bad sum8 is dropped
    up to the next header inside it (FramingError "truncated" when one is there, ChecksumError otherwise).
    """

    MAX_PENDING: Final = FRAME_LEN  # what stays buffered after next_frame() returned None, at most

    TRIM_ON_FEED = False

    def _find_header(self, start: int = 0) -> int:
        hits = [i for i in (self._buf.find(h, start) for h in _HEADERS) if i >= 0]
        return min(hits) if hits else -1

    def _discard(self, n: int, what: str) -> None:
        junk = bytes(self._buf[:n])
        del self._buf[:n]
        if junk and not _is_noise(junk):
            raise FramingError(f"{what}: dropped {len(junk)} bytes ({junk[:16].hex()}{'..' if len(junk) > 16 else ''})")

    def next_frame(self) -> Frame | None:
        buf = self._buf
        while True:
            start = self._find_header()
            if start < 0:
                keep = _partial_tail(buf)
                self._discard(len(buf) - keep, "junk")
                return None
            if start > 0:
                self._discard(start, "junk before frame")
                continue
            if buf[:4] == COMMAND_HEADER:
                return self._command_frame()
            return self._response_frame()

    def _command_frame(self) -> Frame | None:
        buf = self._buf
        if len(buf) < COMMAND_LEN:
            nxt = self._find_header(4)
            if nxt > 0:
                self._discard(nxt, "truncated 20-byte frame")
            return None
        if sum8(buf[:19]) != buf[19]:
            expected, actual = sum8(buf[:19]), buf[19]
            nxt = self._find_header(4)
            del buf[: nxt if 0 < nxt < COMMAND_LEN else COMMAND_LEN]
            raise ChecksumError(expected, actual, "JK 20-byte frame")
        raw = bytes(buf[:COMMAND_LEN])
        del buf[:COMMAND_LEN]
        return Frame(KIND_ACK if raw[4] == ACK_COMMAND else KIND_COMMAND, raw)

    def _response_frame(self) -> Frame | None:
        buf = self._buf
        if len(buf) < FRAME_LEN:  # the buffer never holds more than one partial frame when we return None
            return None
        if sum8(buf[: FRAME_LEN - 1]) == buf[FRAME_LEN - 1]:
            raw = bytes(buf[:FRAME_LEN])
            del buf[:FRAME_LEN]
            if raw[4] not in FRAME_TYPES:
                raise UnsupportedFrame(f"JK frame type {raw[4]:#04x}")
            return Frame(raw[4], raw)
        expected, actual = sum8(buf[: FRAME_LEN - 1]), buf[FRAME_LEN - 1]
        nxt = self._find_header(4)
        if 0 < nxt < FRAME_LEN:
            del buf[:nxt]
            raise FramingError(f"truncated JK frame: next header after {nxt} bytes")
        del buf[:FRAME_LEN]
        raise ChecksumError(expected, actual, "JK frame")

    def finish(self) -> None:
        """End of input: report a half-received frame (then forget it)."""
        if not self._buf:
            return
        rest = bytes(self._buf)
        self._buf.clear()
        if _is_noise(rest):
            return
        if rest.startswith(RESPONSE_HEADER):
            raise FramingError(f"truncated JK frame: {len(rest)} of {FRAME_LEN} bytes")
        if rest.startswith(COMMAND_HEADER):
            raise FramingError(f"truncated JK 20-byte frame: {len(rest)} of {COMMAND_LEN} bytes")
        raise FramingError(f"junk at end of input: {len(rest)} bytes")


# --- field tables ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Field:
    """One value at a fixed offset: struct format (LE), divisor to SI, catalog key (or setting name)."""

    key: str
    offset: int
    fmt: str  # B b H h I i f
    div: float = 1


def read_table(raw: bytes, rows: Iterable[Field]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        (v,) = struct.unpack_from("<" + row.fmt, raw, row.offset)
        if row.fmt == "f":
            out[row.key] = float(v) / row.div if row.div != 1 else float(v)
        elif row.div != 1:
            out[row.key] = v / row.div
        else:
            out[row.key] = v
    return out


@dataclass(frozen=True, slots=True)
class CellLayout:
    """Where the bitfields of a JK02 cell-info frame are (the scalars are in `scalars`)."""

    cells: int  # voltage slots at 6 + 2n
    mask: int  # enabled-cells u32
    max_min_cell: int  # u8 max index, u8 min index
    resistances: int  # u16 mΩ at + 2n
    mos_temperature: int
    temperatures: tuple[int, ...]  # T1, T2 (s16 0.1 °C)
    extra_temperatures: tuple[int, ...]  # 32S T3..T5, read only for sw >= 14
    alarms: int
    alarms_fmt: str
    balancing_action: int
    charge_mos: int
    discharge_mos: int
    sensor_presence: int
    heating: int | None
    scalars: tuple[Field, ...]


def _cell_scalars(o: int) -> tuple[Field, ...]:
    """Scalars of the JK02 cell-info frame; `o` = 0 for 24S, 32 for 32S (protocols.md §1.7)."""
    return (
        Field("voltage", 118 + o, "I", 1000),
        Field("current", 126 + o, "i", 1000),
        Field("balance_current", 138 + o, "h", 1000),
        Field("soc", 141 + o, "B"),
        Field("charge", 142 + o, "I", 1000),
        Field("capacity", 146 + o, "I", 1000),
        Field("cycles", 150 + o, "I"),
        Field("cycle_charge", 154 + o, "I", 1000),
        Field("uptime", 162 + o, "I"),
    )


CELL_LAYOUTS: Final[Mapping[Layout, CellLayout]] = {
    Layout.JK02_24S: CellLayout(
        cells=24, mask=54, max_min_cell=62, resistances=64, mos_temperature=134, temperatures=(130, 132),
        extra_temperatures=(), alarms=136, alarms_fmt="H", balancing_action=140, charge_mos=166, discharge_mos=167,
        sensor_presence=182, heating=None, scalars=_cell_scalars(0)),
    Layout.JK02_32S: CellLayout(
        cells=32, mask=70, max_min_cell=78, resistances=80, mos_temperature=144, temperatures=(162, 164),
        extra_temperatures=(254, 256, 258), alarms=166, alarms_fmt="I", balancing_action=172, charge_mos=198,
        discharge_mos=199, sensor_presence=214, heating=215, scalars=_cell_scalars(32) + (Field("soh", 190, "B"),)),
}
SOH_24S: Final = Field("soh", 158, "B")  # 24S firmware has no real SOH; reported only when 1..100

# Alarm bits (protocols.md §1.11), bit n -> code.
ALARM_CODES: Final[tuple[str, ...]] = (
    "wire_resistance", "mos_overtemperature", "cell_count_mismatch", "current_sensor_anomaly",
    "cell_overvoltage", "pack_overvoltage", "charge_overcurrent", "charge_short_circuit",
    "charge_overtemperature", "charge_undertemperature", "coprocessor_communication_error", "cell_undervoltage",
    "pack_undervoltage", "discharge_overcurrent", "discharge_short_circuit", "discharge_overtemperature",
    "charge_mos_abnormal", "discharge_mos_abnormal", "gps_disconnected", "password_change_due",
    "discharge_on_failed", "battery_overtemperature", "temperature_sensor_anomaly", "pcl_module_anomaly",
    "short_circuit_release_failed", "discharge_overcurrent_2", "discharge_overcurrent_3",
    "discharge_undertemperature", "gps_remote_lock",
)


def alarm_codes(bits: int) -> list[str]:
    """Named codes of a JK alarm bitmask (unknown high bits as alarm_bit_<n>)."""
    return [ALARM_CODES[n] if n < len(ALARM_CODES) else f"alarm_bit_{n}" for n in range(32) if bits >> n & 1]


def sw_major(sw_version: str | None) -> int | None:
    """Major number of a JK software version string ("11.48" -> 11, "7.1.0H" -> 7, "H6.X.." -> None)."""
    if not sw_version:
        return None
    digits = ""
    for ch in sw_version.strip():
        if ch.isdigit():
            digits += ch
        else:
            break
    return int(digits) if digits else None


def detect_layout(sw_version: str | None) -> Layout:
    """protocols.md §1.6: 32S when the software major is >= 11, else 24S; 32S when unknown (as batmon)."""
    major = sw_major(sw_version)
    return Layout.JK02_24S if major is not None and major < 11 else Layout.JK02_32S


def looks_like_jk04(raw: bytes) -> bool:
    """Heuristic for a JK04 cell-info frame: cell slots are float32, so the top byte of the first cells'
    floats (bytes 9, 13) is 0x3F/0x40 (0.5..8 V). In JK02 those are high bytes of mV values (0x0B..0x11)."""
    return len(raw) >= 14 and raw[4] == TYPE_CELL_INFO and raw[9] in (0x3F, 0x40) and raw[13] in (0x3F, 0x40)


# --- decoders ----------------------------------------------------------------------------------------

def _temp(raw: bytes, offset: int) -> float | None:
    (v,) = struct.unpack_from("<h", raw, offset)
    return None if v == ABSENT_TEMPERATURE else v / 10


def _cell_count(mask: int, voltages: list[int]) -> int:
    """Cells = highest enabled bit of the mask; falls back to the last non-zero voltage slot."""
    n = min(mask.bit_length(), len(voltages))
    if n == 0 or not any(voltages[:n]):
        n = max((i + 1 for i, v in enumerate(voltages) if v), default=0)
    return n


def decode_cell_info(raw: bytes, layout: Layout, sw_version: str | None = None) -> Reading:
    """A type 0x02 frame -> Reading. `sw_version` gates the 32S sensors T3..T5 (sw >= 14, §1.7)."""
    _check(raw, TYPE_CELL_INFO)
    if layout is Layout.JK04:
        return _decode_cell_info_jk04(raw)
    c = CELL_LAYOUTS[layout]
    r: Reading = read_table(raw, c.scalars)
    if layout is Layout.JK02_24S:
        soh = read_table(raw, (SOH_24S,))["soh"]
        if 0 < soh <= 100:
            r["soh"] = soh
    volts = list(struct.unpack_from(f"<{c.cells}H", raw, 6))
    (mask,) = struct.unpack_from("<I", raw, c.mask)
    n = _cell_count(mask, volts)
    r["cell_voltages"] = [v / 1000 for v in volts[:n]]
    r["cell_resistances"] = [v / 1000 for v in struct.unpack_from(f"<{n}H", raw, c.resistances)]
    r["power"] = round(r["voltage"] * r["current"], 3)
    presence = raw[c.sensor_presence]
    mos = _temp(raw, c.mos_temperature) if presence & 1 else None
    if mos is not None:
        r["mos_temperature"] = mos
    sensors = list(c.temperatures)
    major = sw_major(sw_version)
    if c.extra_temperatures and major is not None and major >= 14:
        sensors += c.extra_temperatures
    temps = []
    for i, off in enumerate(sensors):
        t = _temp(raw, off) if presence >> (i + 1) & 1 else None
        if t is not None:
            temps.append(t)
    r["temperatures"] = temps
    (bits,) = struct.unpack_from("<" + c.alarms_fmt, raw, c.alarms)
    r["problem_code"] = bits
    r["alarms"] = alarm_codes(bits)
    max_cell, min_cell = raw[c.max_min_cell], raw[c.max_min_cell + 1]
    active = raw[c.balancing_action] in (1, 2)
    r["balancing"] = sorted({i for i in (max_cell, min_cell) if i < n}) if active else []
    switches = {"charge": bool(raw[c.charge_mos]), "discharge": bool(raw[c.discharge_mos])}
    if c.heating is not None:
        switches["heater"] = bool(raw[c.heating])
    r["switches"] = switches
    return r


JK04_CELLS: Final = 24


def _finite(values: Iterable[float]) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise UnsupportedFrame("JK04 frame holds a non-finite float")
    return out


def _decode_cell_info_jk04(raw: bytes) -> Reading:
    volts = _finite(struct.unpack_from(f"<{JK04_CELLS}f", raw, 6))
    n = max((i + 1 for i, v in enumerate(volts) if v > 0.0), default=0)
    cells = [round(float(v), 4) for v in volts[:n]]
    res = _finite(struct.unpack_from(f"<{n}f", raw, 102))
    r: Reading = {
        "cell_voltages": cells,
        "cell_resistances": [round(float(v), 5) for v in res],
        "voltage": round(sum(cells), 3),  # JK04 reports no pack voltage; syssi sums the cells too
    }
    (bal_current,) = _finite(struct.unpack_from("<f", raw, 222))
    r["balance_current"] = round(float(bal_current), 4)
    active = raw[220] in (1, 2)
    if active and cells:
        hi = max(range(n), key=lambda i: cells[i])
        lo = min(range(n), key=lambda i: cells[i])
        r["balancing"] = sorted({hi, lo})
    else:
        r["balancing"] = []
    (r["uptime"],) = struct.unpack_from("<I", raw, 286)
    return r


# Settings frame (type 0x01), protocols.md §1.9: setting name -> row (SI units).
SETTINGS_JK02: Final[tuple[Field, ...]] = (
    Field("smart_sleep_voltage", 6, "I", 1000),
    Field("cell_uvp", 10, "I", 1000),
    Field("cell_uvpr", 14, "I", 1000),
    Field("cell_ovp", 18, "I", 1000),
    Field("cell_ovpr", 22, "I", 1000),
    Field("balance_trigger_delta", 26, "I", 1000),
    Field("power_off_voltage", 46, "I", 1000),
    Field("max_charge_current", 50, "I", 1000),
    Field("charge_ocp_delay", 54, "I"),
    Field("charge_ocp_recovery", 58, "I"),
    Field("max_discharge_current", 62, "I", 1000),
    Field("discharge_ocp_delay", 66, "I"),
    Field("discharge_ocp_recovery", 70, "I"),
    Field("scp_recovery", 74, "I"),
    Field("max_balance_current", 78, "I", 1000),
    Field("charge_otp", 82, "i", 10),
    Field("charge_otpr", 86, "i", 10),
    Field("discharge_otp", 90, "i", 10),
    Field("discharge_otpr", 94, "i", 10),
    Field("charge_utp", 98, "i", 10),
    Field("charge_utpr", 102, "i", 10),
    Field("mos_otp", 106, "i", 10),
    Field("mos_otpr", 110, "i", 10),
    Field("cell_count", 114, "I"),
    Field("nominal_capacity", 130, "I", 1000),
    Field("scp_delay_us", 134, "I"),
    Field("balance_start_voltage", 138, "I", 1000),
)
SETTINGS_JK02_32S_EXTRA: Final[tuple[Field, ...]] = (
    Field("soc_100_voltage", 30, "I", 1000),
    Field("soc_0_voltage", 34, "I", 1000),
    Field("rcv", 38, "I", 1000),
    Field("rfv", 42, "I", 1000),
    Field("device_address", 270, "B"),
    Field("precharge_time", 274, "B"),
    Field("heating_start", 284, "b"),
    Field("heating_stop", 285, "b"),
    Field("smart_sleep_delay", 286, "B"),
    Field("discharge_utp", 296, "b"),
    Field("discharge_utpr", 297, "b"),
)
SETTINGS_JK04: Final[tuple[Field, ...]] = (
    Field("cell_count", 34, "B"),
    Field("power_off_voltage", 38, "f"),
    Field("voltage_calibration", 74, "f"),
    Field("balance_start_voltage", 98, "f"),
    Field("balance_trigger_delta", 106, "f"),
    Field("max_balance_current", 110, "f"),
)
SWITCH_OFFSETS_JK02: Final = (("charge", 118), ("discharge", 122), ("balance", 126))
CONTROL_BITS_32S: Final = 282  # u16 LE control bitmask
CONTROL_SWITCHES: Final = (("heater", 0), ("float_charge", 9))
CONTROL_FLAGS: Final = (("disable_temperature_sensors", 1), ("gps_heartbeat", 2), ("port_rs485", 3),
                        ("display_always_on", 4), ("special_charger", 5), ("smart_sleep", 6), ("disable_pcl", 7),
                        ("timed_stored_data", 8), ("emergency_button", 10), ("dry_intermittent", 11),
                        ("discharge_ocp2", 12), ("discharge_ocp3", 13))


@dataclass(frozen=True, slots=True)
class Settings:
    """A decoded settings frame: named numbers (SI units), switch states and flags."""

    values: dict[str, float | int]
    switches: dict[str, bool]
    flags: dict[str, bool]

    def reading(self) -> Reading:
        """The settings-derived part of a Reading: switch states and the configured capacity."""
        r: Reading = {"switches": dict(self.switches)}
        cap = self.values.get("nominal_capacity")
        if cap:
            r["design_capacity"] = cap
        return r


def decode_settings(raw: bytes, layout: Layout) -> Settings:
    _check(raw, TYPE_SETTINGS)
    if layout is Layout.JK04:
        values = read_table(raw, SETTINGS_JK04)
        _finite(v for v in values.values())
        for k in ("power_off_voltage", "voltage_calibration", "balance_start_voltage", "balance_trigger_delta",
                  "max_balance_current"):
            values[k] = round(values[k], 4)
        return Settings(values, {"balance": bool(raw[114])}, {})
    rows = SETTINGS_JK02 + (SETTINGS_JK02_32S_EXTRA if layout is Layout.JK02_32S else ())
    values = read_table(raw, rows)
    switches = {name: bool(struct.unpack_from("<I", raw, off)[0]) for name, off in SWITCH_OFFSETS_JK02}
    flags: dict[str, bool] = {}
    if layout is Layout.JK02_32S:
        (control,) = struct.unpack_from("<H", raw, CONTROL_BITS_32S)
        switches.update({name: bool(control >> bit & 1) for name, bit in CONTROL_SWITCHES})
        flags = {name: bool(control >> bit & 1) for name, bit in CONTROL_FLAGS}
    return Settings(values, switches, flags)


def decode_device_info(raw: bytes) -> DeviceInfo:
    """Type 0x03 (identical in every layout for the fields used here)."""
    _check(raw, TYPE_DEVICE_INFO)
    (uptime, power_on) = struct.unpack_from("<II", raw, 38)
    extra = {
        "power_on_count": str(power_on),
        "uptime_s": str(uptime),
    }
    for key, off, size in (("manufacturing_date", 78, 8), ("user_data", 102, 16)):
        text = ascii_field(raw[off : off + size])
        if text:
            extra[key] = text
    return DeviceInfo(
        manufacturer="JK BMS",
        model=ascii_field(raw[6:22]) or None,
        hw_version=ascii_field(raw[22:30]) or None,
        sw_version=ascii_field(raw[30:38]) or None,
        name=ascii_field(raw[46:62]) or None,
        serial=ascii_field(raw[86:97]) or None,
        extra=extra,
    )


def decode_logbook(raw: bytes) -> list[tuple[int, int]]:
    """Type 0x05: (timestamp s, event code) entries."""
    _check(raw, TYPE_LOGBOOK)
    (count,) = struct.unpack_from("<I", raw, 6)
    n = min(count, (FRAME_LEN - 1 - 11) // 5)
    return [struct.unpack_from("<IB", raw, 11 + 5 * i) for i in range(n)]


def _check(raw: bytes, kind: int) -> None:
    if len(raw) != FRAME_LEN or raw[:4] != RESPONSE_HEADER:
        raise FramingError(f"not a 300-byte JK frame ({len(raw)} bytes)")
    if raw[4] != kind:
        raise UnsupportedFrame(f"JK frame type {raw[4]:#04x}, expected {kind:#04x}")


# --- `bmsbus decode` ---------------------------------------------------------------------------------

class JkBleDecoder:
    """Stateful decode of a received chunk stream: remembers the sw version from device info (layout
    autodetect when `layout` is None) and applies the JK04 heuristic to cell frames."""

    def __init__(self, layout: Layout | None = None, sw_version: str | None = None) -> None:
        self.fixed = layout
        self.layout = layout or detect_layout(sw_version)
        self.sw_version = sw_version

    def decode(self, frame: Frame) -> dict[str, Any]:
        kind = frame.kind
        raw = frame.raw
        if kind in (KIND_ACK, KIND_COMMAND):
            cmd = parse_command(raw)
            return {"frame_type": kind, "command": cmd.command, "length": cmd.length, "value": cmd.value}
        if kind == TYPE_DEVICE_INFO:
            info = decode_device_info(raw)
            self.sw_version = info.sw_version
            if self.fixed is None:
                self.layout = detect_layout(info.sw_version)
            return {"frame_type": kind, "counter": raw[5], **device_info_dict(info)}
        if kind == TYPE_CELL_INFO:
            if self.fixed is None and looks_like_jk04(raw):
                self.layout = Layout.JK04
            return {"frame_type": kind, "layout": str(self.layout), "counter": raw[5],
                    **decode_cell_info(raw, self.layout, self.sw_version)}
        if kind == TYPE_SETTINGS:
            s = decode_settings(raw, self.layout)
            return {"frame_type": kind, "layout": str(self.layout), **s.reading(), "settings": s.values,
                    "flags": s.flags}
        if kind == TYPE_LOGBOOK:
            return {"frame_type": kind, "entries": [{"ts": ts, "code": code} for ts, code in decode_logbook(raw)]}
        raise UnsupportedFrame(f"JK frame kind {kind!r}")


def device_info_dict(info: DeviceInfo) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(info, k) for k in ("manufacturer", "model", "hw_version", "sw_version",
                                                          "serial", "name") if getattr(info, k)}
    if info.extra:
        out["extra"] = dict(info.extra)
    return out


def decode_stream(chunks: Iterable[bytes], assembler: Any, decode_one: Any) -> list[dict[str, Any]]:
    """Shared body of the `decode=` functions: every frame or error, in order, as a JSON-able dict."""
    out: list[dict[str, Any]] = []

    def run(chunk: bytes) -> None:
        if chunk:
            assembler.feed(chunk)
        while True:
            try:
                frame = assembler.next_frame()
            except CodecError as err:
                out.append({"error": f"{type(err).__name__}: {err}"})
                continue
            if frame is None:
                return
            try:
                out.append(decode_one(frame))
            except CodecError as err:
                out.append({"error": f"{type(err).__name__}: {err}"})

    for chunk in chunks:
        run(bytes(chunk))
    try:
        assembler.finish()
    except CodecError as err:
        out.append({"error": f"{type(err).__name__}: {err}"})
    return out


def make_decode(layout: Layout | None) -> Any:
    def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
        return decode_stream(chunks, JkBleAssembler(), JkBleDecoder(layout).decode)

    decode.__doc__ = f"Decode JK BLE chunks ({layout or 'autodetect'})."
    return decode
