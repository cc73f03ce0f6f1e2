"""Daly "p81" protocol (ESS-DL-BMS and the wired H/K/M/S series): sans-I/O codec. protocols.md §5.4.

The D2 framing (Modbus RTU, CRC-16/MODBUS) with other addresses and another register map: requests go to
0x81 (BMS #1 = 0x80 + 1), replies come from 0x51 (0x50 + 1). Registers are u16 BE:

| reg | content | reg | content |
|---|---|---|---|
| 0x00–0x2F | cell 1–48 voltage (mV) | 0x4B | remaining capacity (0.1 Ah) |
| 0x30–0x37 | temperature 1–8 (raw − 40 °C; 0xFF = none) | 0x4C | cycles |
| 0x38 | total voltage (0.1 V) | 0x4E | balance current ((raw − 30000) mA; 0 = none) |
| 0x39 | current ((raw − 30000) × 0.1 A, + = charging) | 0x4F–0x51 | balancing bitmask cells 1–48 |
| 0x3A | SoC (0.1 %) | 0x52 / 0x53 | charge / discharge MOS |
| 0x3C / 0x3D | cell / temperature-sensor count | 0x58 | power (W, unsigned) |
| 0x3E / 0x3F | max cell mV / its number | 0x5A | MOS temperature (raw − 40; 0xFF = none) |
| 0x41 | number of the min cell | 0x6D–0x6E | problem code (aiobmsble's 4 bytes) |

Sources: syssi/esphome-daly-bms's ESS-DL-BMS capture (protocols.json `daly_ble_p81`), aiobmsble's
requests and byte offsets, and patagonaa/esphome-daly-hkms-bms's register list for the wired series with
the same addressing; they agree on every register above. Not decoded: alarm bits (their meaning is not
published; syssi reads a block at 0xA4, aiobmsble and patagonaa an error block at 0x6D), the SoH-labelled
0x3B (its values, 182 and 72, are not percentages), and writes (MOS control sits at 0x121/0x122 in one
source and 0x125/0x126 in another, so bmsbus offers no p81 switch).

Polling (aiobmsble's requests): `81 03 0000 0040` (registers 0x00–0x3F), `81 03 0041 003E` (0x41–0x7E),
device info `81 03 0178 004A` (74 registers of NUL-padded ASCII).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ...codec import DeviceInfo, Frame, Reading, UnsupportedFrame, ascii_field
from .. import modbus_rtu
from ..decode_util import decode_stream, device_info_dict
from ..fields import Field, FieldTable, bits_set

REQUEST_ADDRESS: Final = 0x81
REPLY_ADDRESS: Final = 0x51

STATUS_A: Final = (0x00, 0x40)  # (first register, count): cells, temperatures, V/I/SoC, counts, max cell
STATUS_B: Final = (0x41, 0x3E)  # capacity, cycles, balancing, MOS states, power, MOS temperature, problems
VERSION: Final = (0x178, 0x4A)

MAX_CELLS: Final = 48
MAX_TEMPS: Final = 8
TEMPERATURE_BIAS: Final = 40
TEMPERATURE_ABSENT: Final = 0xFF
CURRENT_ZERO: Final = 30000

STATUS_A_FIELDS: Final = FieldTable((
    Field("voltage", 2 * 0x38, 2, scale=0.1),
    Field("current", 2 * 0x39, 2, scale=0.1, bias=CURRENT_ZERO),
    Field("soc", 2 * 0x3A, 2, scale=0.1),
))
STATUS_A_DETAILS: Final = FieldTable((
    Field("cell_count", 2 * 0x3C, 2),
    Field("temperature_count", 2 * 0x3D, 2),
    Field("max_cell_voltage", 2 * 0x3E, 2, scale=0.001),
    Field("max_cell_number", 2 * 0x3F, 2),
    Field("soh_raw", 2 * 0x3B, 2),
))


def _b(register: int) -> int:
    """Data offset of a register in the STATUS_B block."""
    return 2 * (register - STATUS_B[0])


STATUS_B_FIELDS: Final = FieldTable((
    Field("charge", _b(0x4B), 2, scale=0.1),
    Field("cycles", _b(0x4C), 2),
))
STATUS_B_DETAILS: Final = FieldTable((
    Field("min_cell_number", _b(0x41), 2),
    Field("state", _b(0x48), 2),
    Field("balancer_state", _b(0x4D), 2),
    Field("heater", _b(0x55), 2),
    Field("average_cell_voltage", _b(0x57), 2, scale=0.001),
    Field("power_raw", _b(0x58), 2),
    Field("board_temperature_raw", _b(0x5B), 2),
))
STATE_NAMES: Final = {0: "idle", 1: "charging", 2: "discharging"}


# --- request builders ---------------------------------------------------------------------------------

def read_request(register: int, count: int) -> bytes:
    return modbus_rtu.read_request(REQUEST_ADDRESS, register, count)


def status_requests() -> tuple[bytes, bytes]:
    return read_request(*STATUS_A), read_request(*STATUS_B)


def version_request() -> bytes:
    return read_request(*VERSION)


def new_assembler() -> modbus_rtu.ModbusRtuAssembler:
    return modbus_rtu.ModbusRtuAssembler({REPLY_ADDRESS})


# --- decoders -----------------------------------------------------------------------------------------

def _data(frame: Frame, count: int, what: str) -> bytes:
    if frame.address != REPLY_ADDRESS:
        raise UnsupportedFrame(f"reply from {frame.address:#04x} is not a Daly p81 reply (0x51)")
    if (code := modbus_rtu.exception_code(frame)) is not None:
        raise UnsupportedFrame(f"Daly p81 Modbus exception {code:#04x} to function {int(frame.kind) & 0x7F:#04x}")
    data = modbus_rtu.registers(frame)
    if len(data) != 2 * count:
        raise UnsupportedFrame(f"Daly p81 block of {len(data)} bytes is not the {what} ({2 * count} bytes)")
    return data


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "big")


def _temperature(raw: int) -> float | None:
    return None if raw == TEMPERATURE_ABSENT else float(raw - TEMPERATURE_BIAS)


def decode_status_a(frame: Frame) -> Reading:
    """Registers 0x00–0x3F: voltage, current (+ = charging), SoC, cells, temperatures."""
    data = _data(frame, STATUS_A[1], "status block 0x00")
    out: Reading = dict(STATUS_A_FIELDS.decode(data))
    cells = min(_u16(data, 2 * 0x3C), MAX_CELLS)
    temps = min(_u16(data, 2 * 0x3D), MAX_TEMPS)
    if cells:
        out["cell_voltages"] = [_u16(data, 2 * i) / 1000 for i in range(cells)]
    temperatures = [_temperature(_u16(data, 2 * (0x30 + i))) for i in range(temps)]
    if any(t is not None for t in temperatures):
        out["temperatures"] = [t for t in temperatures if t is not None]
    if not 0 <= out["soc"] <= 100:
        del out["soc"]
    return out


def decode_status_b(frame: Frame, cells: int | None = None, current: float | None = None) -> Reading:
    """Registers 0x41–0x7E. `cells` limits the balancing bits; `current` gives the power its sign (the
    register is unsigned)."""
    data = _data(frame, STATUS_B[1], "status block 0x41")
    out: Reading = dict(STATUS_B_FIELDS.decode(data))
    out["switches"] = {"charge": bool(_u16(data, _b(0x52))), "discharge": bool(_u16(data, _b(0x53)))}
    mask = _u16(data, _b(0x4F)) | _u16(data, _b(0x50)) << 16 | _u16(data, _b(0x51)) << 32
    out["balancing"] = bits_set(mask, MAX_CELLS if cells is None else min(cells, MAX_CELLS))
    balance = _u16(data, _b(0x4E))
    if balance:  # 0 = not reported (a real 0 mA is 30000)
        out["balance_current"] = round((balance - CURRENT_ZERO) * 0.001, 6)
    mos = _temperature(_u16(data, _b(0x5A)))
    if mos is not None:
        out["mos_temperature"] = mos
    power = _u16(data, _b(0x58))
    if current is not None:
        out["power"] = float(-power if current < 0 else power)
    out["problem_code"] = int.from_bytes(data[_b(0x6D) : _b(0x6D) + 4], "big")
    return out


def decode_status(first: Frame, second: Frame | None) -> Reading:
    """Both status blocks as one reading (the second is optional)."""
    out = decode_status_a(first)
    if second is not None:
        out.update(decode_status_b(second, len(out.get("cell_voltages", ())) or None, out["current"]))
    return out


def decode_version(frame: Frame) -> DeviceInfo:
    """74 registers from 0x178: software version (bytes 0–13), model (14–27), then more NUL-padded strings
    whose meaning is not documented (kept in `extra`)."""
    data = _data(frame, VERSION[1], "version block")
    sw, model = ascii_field(data[0:14]), ascii_field(data[14:28])
    rest = [ascii_field(data[i : i + 14]) for i in (28, 42)] + [ascii_field(data[56:80])]
    info = DeviceInfo(manufacturer="Daly", model=model or None, sw_version=sw or None)
    strings = [s for s in rest if s]
    if strings:
        info.extra["strings"] = " | ".join(strings)
    return info


# --- `bmsbus decode` ------------------------------------------------------------------------------------

def describe(frame: Frame) -> dict[str, Any]:
    """One p81 reply as a JSON-able dict, the block told by its size (128 status 0x00, 124 status 0x41,
    148 version)."""
    out: dict[str, Any] = {"frame_type": f"{frame.kind:#04x}", "address": frame.address, "variant": "p81"}
    if (code := modbus_rtu.exception_code(frame)) is not None:
        raise UnsupportedFrame(f"Daly p81 Modbus exception {code:#04x} to function {int(frame.kind) & 0x7F:#04x}")
    if frame.kind == modbus_rtu.WRITE_SINGLE:
        return {**out, "write_echo": True, "register": int.from_bytes(frame.raw[2:4], "big"),
                "value": int.from_bytes(frame.raw[4:6], "big")}
    data = modbus_rtu.registers(frame)
    n = len(data)
    if n == 2 * STATUS_A[1]:
        return {**out, "block": "status_0x00", **STATUS_A_DETAILS.decode(data), **decode_status_a(frame)}
    if n == 2 * STATUS_B[1]:
        details = STATUS_B_DETAILS.decode(data)
        details["state_name"] = STATE_NAMES.get(int(details["state"]), "unknown")
        return {**out, "block": "status_0x41", **details, **decode_status_b(frame)}
    if n == 2 * VERSION[1]:
        return {**out, "block": "version", **device_info_dict(decode_version(frame))}
    return {**out, "block": "unknown", "registers": [int.from_bytes(data[i : i + 2], "big") for i in range(0, n, 2)]}


def decode_chunks(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    return decode_stream(chunks, new_assembler(), describe)
