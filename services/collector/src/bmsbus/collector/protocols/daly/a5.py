"""Daly "0xA5" protocol (UART/RS485 and older Daly BLE modules): sans-I/O codec. protocols.md §4.

Every frame is 13 bytes: `A5 addr data-id 08 <8 data bytes> sum8(bytes 0..11)`. The host sends with its
own address (0x40 on RS485/USB, 0x80 over Bluetooth), the BMS answers with 0x01. Multi-byte values are
big-endian. Cell voltages (0x95) and temperatures (0x96) come as numbered frames (from 1).

Current sign: `(raw - 30000) * 0.1 A` whose sign is firmware dependent. The decoders use the sign most
sources agree on (raw > 30000 = discharging, so current = (30000 - raw) * 0.1, + = charging); the driver
cross-checks it with the 0x93 state byte and honours an `invert_current` option.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any, Final

from ...checksums import sum8
from ...codec import BufferedAssembler, ChecksumError, FramingError, Frame, Reading, UnsupportedFrame, UsageError
from ..decode_util import decode_stream
from ..fields import Field, FieldTable, bits_set
from .alarms import failure_alarms

START: Final = 0xA5
DATA_LEN: Final = 8
FRAME_LEN: Final = 13
BMS_ADDRESS: Final = 0x01
HOST_UART: Final = 0x40  # RS485 / USB adapters ("upper computer" in the V1.2 document)
HOST_BLE: Final = 0x80  # Bluetooth modules and TTL UART
HOST_ADDRESSES: Final = frozenset({0x20, 0x40, 0x80})  # every host address either document names

CELLS_PER_FRAME: Final = 3
TEMPS_PER_FRAME: Final = 7
BLE_CELL_FRAMES: Final = 16  # a BLE module always sends all 16 (48 slots)
BLE_TEMP_FRAMES: Final = 3
MAX_CELLS: Final = 48
TEMPERATURE_BIAS: Final = 40
CURRENT_ZERO: Final = 30000


class Cmd(IntEnum):
    SOC = 0x90  # voltage, current, SoC
    CELL_RANGE = 0x91  # max/min cell voltage and cell numbers
    TEMP_RANGE = 0x92  # max/min temperature and sensor numbers
    MOS = 0x93  # state, MOS, life, remaining capacity
    STATUS = 0x94  # cell and sensor counts, charger/load, DIO, cycles
    CELLS = 0x95  # cell voltages, multi-frame
    TEMPS = 0x96  # temperatures, multi-frame
    BALANCE = 0x97  # balancing bits, cells 1..48
    FAILURES = 0x98  # failure flags
    DISCHARGE_MOS = 0xD9  # write: data byte 0 = 1 on / 0 off; echoed
    CHARGE_MOS = 0xDA


STATE_NAMES: Final[Mapping[int, str]] = {0: "idle", 1: "charging", 2: "discharging"}
SWITCH_COMMANDS: Final[Mapping[str, Cmd]] = {"charge": Cmd.CHARGE_MOS, "discharge": Cmd.DISCHARGE_MOS}


# --- request builders ---------------------------------------------------------------------------------

def build_frame(address: int, command: int, data: bytes = bytes(DATA_LEN)) -> bytes:
    """A 13-byte frame (a host request, or for emulators a BMS reply)."""
    if len(data) != DATA_LEN or not 0 <= command <= 0xFF or not 0 <= address <= 0xFF:
        raise UsageError(f"Daly frame needs 8 data bytes, got {len(data)}")
    body = bytes((START, address, command, DATA_LEN)) + bytes(data)
    return body + bytes((sum8(body),))


def build_request(command: int, host: int = HOST_UART) -> bytes:
    return build_frame(host, command)


def build_switch(name: str, on: bool, host: int = HOST_UART) -> bytes:
    try:
        command = SWITCH_COMMANDS[name]
    except KeyError:
        raise UsageError(f"Daly A5 has no switch {name!r}") from None
    return build_frame(host, command, bytes((1 if on else 0,)) + bytes(DATA_LEN - 1))


# --- assembler ----------------------------------------------------------------------------------------

class DalyA5Assembler(BufferedAssembler):
    """Splits a byte stream into 13-byte frames; resyncs on 0xA5. Host requests (an RS485 echo, or what
    an emulator receives) are frames too: their `address` is the host's."""


    def next_frame(self) -> Frame | None:
        buf = self._buf
        self._raise_overflow()
        start = buf.find(START)
        if not self._at_frame_start(start):
            return None
        if len(buf) >= 4 and buf[3] != DATA_LEN:
            length = buf[3]
            del buf[:1]
            raise FramingError(f"Daly length byte {length:#04x}, expected 0x08")
        if len(buf) < FRAME_LEN:
            return None
        expected = sum8(buf[:12])
        if expected != buf[12]:
            actual = buf[12]
            del buf[:1]
            raise ChecksumError(expected, actual, "Daly frame")
        raw = bytes(buf[:FRAME_LEN])
        del buf[:FRAME_LEN]
        return Frame(kind=raw[2], raw=raw, address=raw[1])


def payload(frame: Frame) -> bytes:
    if len(frame.raw) != FRAME_LEN:
        raise FramingError(f"Daly frame of {len(frame.raw)} bytes")
    return frame.raw[4:12]


def is_reply(frame: Frame) -> bool:
    """True for frames a BMS sent (not a host request echoed on the bus)."""
    return frame.address not in HOST_ADDRESSES


# --- decoders -----------------------------------------------------------------------------------------

# Rows that give catalog values, per data id.
READING_FIELDS: Final[Mapping[int, FieldTable]] = {
    Cmd.SOC: FieldTable((
        Field("voltage", 0, 2, scale=0.1),
        Field("current", 4, 2, scale=-0.1, bias=CURRENT_ZERO),  # raw > 30000 = discharging (default sign)
        Field("soc", 6, 2, scale=0.1),
    )),
    Cmd.MOS: FieldTable((Field("charge", 4, 4, scale=0.001),)),  # mAh -> Ah
    Cmd.STATUS: FieldTable((Field("cycles", 5, 2),)),
}

# Rows for `bmsbus decode` output only (not catalog keys).
DETAIL_FIELDS: Final[Mapping[int, FieldTable]] = {
    Cmd.SOC: FieldTable((Field("gathered_voltage", 2, 2, scale=0.1), Field("current_raw", 4, 2))),
    Cmd.CELL_RANGE: FieldTable((
        Field("max_cell_voltage", 0, 2, scale=0.001), Field("max_cell", 2, 1),
        Field("min_cell_voltage", 3, 2, scale=0.001), Field("min_cell", 5, 1),
    )),
    Cmd.TEMP_RANGE: FieldTable((
        Field("max_temperature", 0, 1, bias=TEMPERATURE_BIAS), Field("max_temperature_sensor", 1, 1),
        Field("min_temperature", 2, 1, bias=TEMPERATURE_BIAS), Field("min_temperature_sensor", 3, 1),
    )),
    Cmd.MOS: FieldTable((Field("state", 0, 1), Field("life", 3, 1))),
    Cmd.STATUS: FieldTable((
        Field("cell_count", 0, 1), Field("temperature_count", 1, 1), Field("charger_connected", 2, 1),
        Field("load_connected", 3, 1), Field("dio", 4, 1),
    )),
}


def decode_reading(frame: Frame) -> Reading:
    """Catalog values of one single-frame answer (0x90, 0x93, 0x94, 0x97, 0x98). Current in the default
    sign (see the module docstring)."""
    data = payload(frame)
    kind = frame.kind
    out: Reading = dict(READING_FIELDS[kind].decode(data)) if kind in READING_FIELDS else {}
    if kind == Cmd.SOC and not 0 <= out["soc"] <= 100:
        del out["soc"]  # firmware glitch; absent rather than impossible
    elif kind == Cmd.MOS:
        out["switches"] = mos_switches(data)
    elif kind == Cmd.BALANCE:
        out["balancing"] = balance_cells(data)
    elif kind == Cmd.FAILURES:
        out["alarms"] = failure_alarms(data[:7])
        out["problem_code"] = int.from_bytes(data, "big")
    elif kind not in READING_FIELDS:
        raise UnsupportedFrame(f"Daly data id {kind:#04x} is not a single-frame reading")
    return out


def mos_switches(data: bytes) -> dict[str, bool]:
    return {"charge": bool(data[1]), "discharge": bool(data[2])}


def balance_cells(data: bytes) -> list[int]:
    """0x97: bit n (byte n // 8, LSB first) = cell n + 1. The byte/bit order is the documented one; no
    capture confirms it."""
    return bits_set(int.from_bytes(data[:6], "little"), MAX_CELLS)


def state(frame: Frame) -> int:
    """0x93 byte 0: 0 idle, 1 charging, 2 discharging."""
    return payload(frame)[0]


def counts(frame: Frame) -> tuple[int, int]:
    """0x94: (cell count, temperature-sensor count)."""
    data = payload(frame)
    return data[0], data[1]


def cell_frame(frame: Frame) -> tuple[int, list[float]]:
    """0x95: (frame number, three cell voltages in V)."""
    data = payload(frame)
    return data[0], [int.from_bytes(data[i : i + 2], "big") / 1000 for i in (1, 3, 5)]


def temp_frame(frame: Frame) -> tuple[int, list[float]]:
    """0x96: (frame number, seven temperatures in °C)."""
    data = payload(frame)
    return data[0], [float(b - TEMPERATURE_BIAS) for b in data[1:8]]


def frames_needed(count: int, per_frame: int) -> int:
    return -(-count // per_frame)


def collect(parts: Mapping[int, list[float]], count: int, per_frame: int) -> list[float] | None:
    """Join numbered multi-frame parts once the first `count` values are all there, else None. Real BMSs
    number from 1; the document says from 0, so a part numbered 0 shifts the numbering."""
    first = 0 if 0 in parts else 1
    needed = frames_needed(count, per_frame)
    if any(first + i not in parts for i in range(needed)):
        return None
    values = [v for i in range(needed) for v in parts[first + i]]
    return values[:count]


def current_sign_mismatch(current: float, bms_state: int, threshold: float = 0.2) -> bool | None:
    """Does the 0x93 state byte contradict the default-sign current? None when it cannot tell (idle,
    or too little current)."""
    if bms_state not in (1, 2) or abs(current) < threshold:
        return None
    return (current > 0) != (bms_state == 1)


# --- `bmsbus decode` ------------------------------------------------------------------------------------

def describe(frame: Frame) -> dict[str, Any]:
    """One frame as a JSON-able dict (frame_type, address, catalog values and details)."""
    data = payload(frame)
    kind = frame.kind
    out: dict[str, Any] = {"frame_type": f"{kind:#04x}", "address": frame.address}
    if not is_reply(frame):
        return {**out, "request": True, "data": data.hex()}
    if kind in DETAIL_FIELDS:
        out.update(DETAIL_FIELDS[kind].decode(data))
    if kind == Cmd.MOS:
        out["state_name"] = STATE_NAMES.get(data[0], "unknown")
    if kind == Cmd.CELLS:
        number, cells = cell_frame(frame)
        return {**out, "frame_number": number, "cell_voltages": cells}
    if kind == Cmd.TEMPS:
        number, temps = temp_frame(frame)
        return {**out, "frame_number": number, "temperatures": temps}
    if kind in (Cmd.CHARGE_MOS, Cmd.DISCHARGE_MOS):
        return {**out, "switch": "charge" if kind == Cmd.CHARGE_MOS else "discharge", "on": bool(data[0])}
    if kind in (Cmd.CELL_RANGE, Cmd.TEMP_RANGE):
        return out
    if kind == Cmd.FAILURES:
        out["fault_code"] = data[7]
    out.update(decode_reading(frame))
    return out


def decode_chunks(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    return decode_stream(chunks, DalyA5Assembler(), describe)
