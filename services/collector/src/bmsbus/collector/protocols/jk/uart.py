"""JK UART / RS485 "GPS port" protocol (0x4E 0x57) of the older JK-B* BMS: sans-I/O codec. protocols.md §2.

Frame: `4E 57 | LEN u16 BE (bytes after STX, incl. LEN and checksum) | terminal id (4) | command | source |
transport type | information (TLVs) | record number (4) | 68 | 00 00 sum16 BE` (sum16 over STX..68).
The information of a read-all reply is a walk of TLVs whose value lengths are fixed per identifier
(`TLV_LENGTHS`), except 0x79 (cell voltages) which carries its own length byte.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import Any, Final

from ...checksums import sum16
from ...codec import (BufferedAssembler, ChecksumError, DeviceInfo, Frame, FramingError, Reading, UnsupportedFrame,
                      UsageError)
from .ble import decode_stream, device_info_dict

STX: Final = b"\x4e\x57"
END_MARK: Final = 0x68
MIN_LEN: Final = 18  # LEN field of a frame with an empty information part
MAX_LEN: Final = 1024
TLV_START: Final = 11
TRAILER: Final = 9  # record number (4) + end mark (1) + checksum (4)

CMD_ACTIVATE: Final = 0x01
CMD_WRITE: Final = 0x02
CMD_READ_ONE: Final = 0x03
CMD_PASSWORD: Final = 0x05
CMD_READ_ALL: Final = 0x06

SOURCE_BMS, SOURCE_BLE, SOURCE_GPS, SOURCE_PC = 0, 1, 2, 3
TRANSPORT_REQUEST, TRANSPORT_REPLY, TRANSPORT_UPLOAD = 0, 1, 2

# Switches writable with command 0x02 (1-byte value). 0x9D (balancer) is left out: v11 firmware rejects it.
SWITCH_IDS: Final = {"charge": 0xAB, "discharge": 0xAC}


def build_frame(command: int, info: bytes, *, source: int = SOURCE_PC, transport: int = TRANSPORT_REQUEST,
                record: int = 0) -> bytes:
    length = MIN_LEN + len(info)
    body = (STX + struct.pack(">H", length) + bytes(4) + bytes((command, source, transport)) + info
            + struct.pack(">I", record & 0xFFFFFFFF) + bytes((END_MARK,)))
    return body + b"\x00\x00" + struct.pack(">H", sum16(body))


# The constant read-all request (dbus-serialbattery, JK doc; checksum 0x0129).
REQUEST_READ_ALL: Final = build_frame(CMD_READ_ALL, b"\x00")


def build_password() -> bytes:
    """The password frame [syssi-jk] sends before a write (command 0x05, identifier 0x00)."""
    return build_frame(CMD_PASSWORD, b"\x00", source=SOURCE_GPS)


def build_switch(name: str, on: bool) -> bytes:
    """22-byte write `4E 57 00 14 .. 02 02 00 <id> <value> ..` (protocols.md §2.6)."""
    try:
        ident = SWITCH_IDS[name]
    except KeyError:
        raise UsageError(f"jk_uart: no writable switch {name!r}; writable: {', '.join(SWITCH_IDS)}") from None
    return build_frame(CMD_WRITE, bytes((ident, 1 if on else 0)), source=SOURCE_GPS)


class JkUartAssembler(BufferedAssembler):
    """Bytes in, frames out: Frame(kind=command byte, raw). Resyncs on `4E 57`; a bad LEN, end mark or sum16
    drops the bytes up to the next `4E 57` inside the claimed frame (or the whole claimed frame)."""

    MAX_PENDING: Final = MAX_LEN + 2

    TRIM_ON_FEED = False

    def _drop(self, n: int) -> None:
        junk = bytes(self._buf[:n])
        del self._buf[:n]
        if junk:
            raise FramingError(f"junk: dropped {len(junk)} bytes ({junk[:16].hex()})")

    def _resync(self, limit: int) -> None:
        """Drop a bad frame start: up to the next STX before `limit`, else `limit` bytes."""
        nxt = self._buf.find(STX, 1, limit + 1)
        del self._buf[: nxt if nxt > 0 else max(limit, 2)]

    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = buf.find(STX)
        if start < 0:
            keep = 1 if buf[-1:] == STX[:1] else 0
            self._drop(len(buf) - keep)
            return None
        if start > 0:
            self._drop(start)
        if len(buf) < 4:
            return None
        (length,) = struct.unpack_from(">H", buf, 2)
        if not MIN_LEN <= length <= MAX_LEN:
            self._resync(len(buf) - (1 if buf[-1:] == STX[:1] else 0))
            raise FramingError(f"JK UART length {length} out of range")
        total = length + 2
        if len(buf) < total:
            return None
        expected, actual = sum16(buf[: total - 4]), int.from_bytes(buf[total - 2 : total], "big")
        end_mark = buf[total - 5]
        if end_mark != END_MARK:
            self._resync(total)
            raise FramingError(f"JK UART frame without end mark 0x68 (got {end_mark:#04x})")
        if expected != actual:
            self._resync(total)
            raise ChecksumError(expected, actual, "JK UART frame")
        raw = bytes(buf[:total])
        del buf[:total]
        return Frame(raw[8], raw)

    def finish(self) -> None:
        if not self._buf:
            return
        n = len(self._buf)
        self._buf.clear()
        raise FramingError(f"truncated JK UART frame: {n} bytes left at end of input")


# --- TLVs --------------------------------------------------------------------------------------------

# identifier -> value length (bytes). 0x79 is variable (length byte + data).
TLV_LENGTHS: Final[dict[int, int]] = {
    0x80: 2, 0x81: 2, 0x82: 2, 0x83: 2, 0x84: 2, 0x85: 1, 0x86: 1, 0x87: 2, 0x89: 4, 0x8A: 2, 0x8B: 2, 0x8C: 2,
    0x8E: 2, 0x8F: 2, 0x90: 2, 0x91: 2, 0x92: 2, 0x93: 2, 0x94: 2, 0x95: 2, 0x96: 2, 0x97: 2, 0x98: 2, 0x99: 2,
    0x9A: 2, 0x9B: 2, 0x9C: 2, 0x9D: 1, 0x9E: 2, 0x9F: 2, 0xA0: 2, 0xA1: 2, 0xA2: 2, 0xA3: 2, 0xA4: 2, 0xA5: 2,
    0xA6: 2, 0xA7: 2, 0xA8: 2, 0xA9: 1, 0xAA: 4, 0xAB: 1, 0xAC: 1, 0xAD: 2, 0xAE: 1, 0xAF: 1, 0xB0: 2, 0xB1: 1,
    0xB2: 10, 0xB3: 1, 0xB4: 8, 0xB5: 4, 0xB6: 4, 0xB7: 15, 0xB8: 1, 0xB9: 4, 0xBA: 24, 0xBE: 2, 0xBF: 2,
    0xC0: 1,
}
TEXT_IDS: Final = frozenset({0xB2, 0xB4, 0xB5, 0xB7, 0xBA})
SIGNED_IDS: Final = frozenset({0xA5, 0xA6, 0xA7, 0xA8})
CELLS_ID: Final = 0x79

# Named settings (TLV id -> name, divisor to SI).
SETTING_IDS: Final[dict[int, tuple[str, float]]] = {
    0x8E: ("pack_ovp", 100), 0x8F: ("pack_uvp", 100), 0x90: ("cell_ovp", 1000), 0x91: ("cell_ovpr", 1000),
    0x92: ("cell_ovp_delay", 1), 0x93: ("cell_uvp", 1000), 0x94: ("cell_uvpr", 1000), 0x95: ("cell_uvp_delay", 1),
    0x96: ("cell_delta_protection", 1000), 0x97: ("discharge_ocp", 1), 0x98: ("discharge_ocp_delay", 1),
    0x99: ("charge_ocp", 1), 0x9A: ("charge_ocp_delay", 1), 0x9B: ("balance_start_voltage", 1000),
    0x9C: ("balance_trigger_delta", 1000), 0x9E: ("mos_otp", 1), 0x9F: ("mos_otpr", 1), 0xA0: ("box_otp", 1),
    0xA1: ("box_otpr", 1), 0xA2: ("temperature_delta_protection", 1), 0xA3: ("charge_otp", 1),
    0xA4: ("discharge_otp", 1), 0xA5: ("charge_utp", 1), 0xA6: ("charge_utpr", 1), 0xA7: ("discharge_utp", 1),
    0xA8: ("discharge_utpr", 1), 0xA9: ("cell_count", 1), 0xAA: ("capacity", 1), 0xAD: ("current_calibration", 1000),
    0xAE: ("board_address", 1), 0xB0: ("sleep_wait", 1), 0xB1: ("low_soc_alarm", 1), 0xBE: ("gps_off_voltage", 1000),
    0xBF: ("gps_on_voltage", 1000),
}

# 0x8B warning bits (protocols.md §2.3) -> alarm codes.
WARNING_CODES: Final[tuple[str, ...]] = (
    "low_capacity", "mos_overtemperature", "charge_overvoltage", "discharge_undervoltage", "battery_overtemperature",
    "charge_overcurrent", "discharge_overcurrent", "cell_voltage_difference", "box_overtemperature",
    "battery_undertemperature", "cell_overvoltage", "cell_undervoltage", "protection_309_a", "protection_309_b",
)


def walk_tlvs(raw: bytes) -> tuple[dict[int, Any], int | None]:
    """The TLVs of a frame's information part: {id: int | bytes | [(cell#, mV), ...]}, and the first unknown
    identifier where the walk had to stop (None when it reached the trailer)."""
    end = len(raw) - TRAILER
    pos = TLV_START
    out: dict[int, Any] = {}
    while pos < end:
        ident = raw[pos]
        pos += 1
        if ident == CELLS_ID:
            if pos >= end:
                raise UnsupportedFrame("JK UART 0x79 without a length")
            n = raw[pos]
            data = raw[pos + 1 : pos + 1 + n]
            if len(data) < n or pos + 1 + n > end:
                raise UnsupportedFrame("JK UART 0x79 runs past the frame")
            out[ident] = [(data[i], int.from_bytes(data[i + 1 : i + 3], "big")) for i in range(0, n - n % 3, 3)]
            pos += 1 + n
            continue
        size = TLV_LENGTHS.get(ident)
        if size is None:
            return out, ident
        if pos + size > end:
            raise UnsupportedFrame(f"JK UART TLV {ident:#04x} runs past the frame")
        data = raw[pos : pos + size]
        pos += size
        out[ident] = bytes(data) if ident in TEXT_IDS else int.from_bytes(data, "big", signed=ident in SIGNED_IDS)
    return out, None


def temperature(raw: int) -> float:
    """protocols.md §2.4 (official doc): 0..100 = °C, above 100 = -(raw - 100)."""
    return float(raw if raw <= 100 else -(raw - 100))


def current(raw: int, protocol_version: int | None) -> float | None:
    """protocols.md §2.5. Version 1 (and when the frame has no 0xC0): bit15 set = charging, magnitude in 10 mA.
    Version 0 (old firmware): (10000 - raw) × 10 mA (raw 11000 -> -10 A). Other versions: None (unknown)."""
    if protocol_version in (None, 1):
        magnitude = (raw & 0x7FFF) / 100
        return magnitude if raw & 0x8000 or not magnitude else -magnitude
    if protocol_version == 0:
        return (10000 - raw) / 100
    return None


def _text(data: bytes) -> str:
    return data.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def decode_read_all(raw: bytes) -> tuple[Reading, DeviceInfo, dict[str, float | int]]:
    """A read-all reply -> (Reading, DeviceInfo, settings)."""
    if len(raw) < TLV_START + TRAILER or raw[:2] != STX:
        raise FramingError("not a JK UART frame")
    tlv, _unknown = walk_tlvs(raw)
    r: Reading = {}
    cells = tlv.get(CELLS_ID)
    if cells is not None:
        r["cell_voltages"] = [mv / 1000 for _n, mv in sorted(cells)]
    if 0x80 in tlv:
        r["mos_temperature"] = temperature(tlv[0x80])
    sensors = [temperature(tlv[i]) for i in (0x81, 0x82) if i in tlv]
    if sensors:
        r["temperatures"] = sensors[: tlv.get(0x86, len(sensors))]
    if 0x83 in tlv:
        r["voltage"] = tlv[0x83] / 100
    if 0x84 in tlv:
        amps = current(tlv[0x84], tlv.get(0xC0))
        if amps is not None:
            r["current"] = amps
            if "voltage" in r:
                r["power"] = round(r["voltage"] * amps, 3)
    if 0x85 in tlv:
        r["soc"] = min(tlv[0x85], 100)
    if 0x87 in tlv:
        r["cycles"] = tlv[0x87]
    if 0x89 in tlv:
        r["cycle_charge"] = float(tlv[0x89])
    if 0x8B in tlv:
        bits = tlv[0x8B]
        r["problem_code"] = bits
        r["alarms"] = [WARNING_CODES[n] if n < len(WARNING_CODES) else f"warning_bit_{n}"
                       for n in range(16) if bits >> n & 1]
    # Switches: charge/discharge from their settings 0xAB/0xAC (what a write changes), else from the 0x8C
    # status bits; balance from the 0x8C "balancer switch" bit (as batmon), else from 0x9D.
    switches: dict[str, bool] = {}
    if 0x9D in tlv:
        switches["balance"] = bool(tlv[0x9D])
    if 0x8C in tlv:
        status = tlv[0x8C]
        switches.update(charge=bool(status & 1), discharge=bool(status & 2), balance=bool(status & 4))
    for ident, name in ((0xAB, "charge"), (0xAC, "discharge")):
        if ident in tlv:
            switches[name] = bool(tlv[ident])
    if switches:
        r["switches"] = switches
    if 0xAA in tlv:
        r["design_capacity"] = float(tlv[0xAA])
    if 0xB9 in tlv and tlv[0xB9]:
        r["capacity"] = float(tlv[0xB9])
    if 0xB6 in tlv:
        r["uptime"] = tlv[0xB6] * 60
    settings = {name: (tlv[i] / div if div != 1 else tlv[i]) for i, (name, div) in SETTING_IDS.items() if i in tlv}
    return r, device_info(tlv), settings


def device_info(tlv: dict[int, Any]) -> DeviceInfo:
    info = DeviceInfo(manufacturer="JK BMS")
    version = _text(tlv[0xB7]) if 0xB7 in tlv else ""
    if version:
        hw, sep, sw = version.partition("_S")
        info.hw_version = hw.rstrip("_") or None
        info.sw_version = (sw if sep else hw).rstrip("_") or None
        info.extra["software_version_raw"] = version
    maker = _text(tlv[0xBA]) if 0xBA in tlv else ""
    if maker:
        info.extra["manufacturer_id"] = maker
        m = re.search(r"JK[-_A-Z0-9]+$", maker)
        info.model = m.group(0) if m else None
    if 0xB4 in tlv and _text(tlv[0xB4]):
        info.serial = _text(tlv[0xB4])
    if 0xB5 in tlv and _text(tlv[0xB5]):
        info.extra["manufacturing_date"] = _text(tlv[0xB5])
    if 0xC0 in tlv:
        info.extra["protocol_version"] = str(tlv[0xC0])
    if 0xAF in tlv:
        info.extra["battery_type"] = {0: "lfp", 1: "ternary", 2: "lto"}.get(tlv[0xAF], str(tlv[0xAF]))
    return info


def decode_frame(frame: Frame) -> dict[str, Any]:
    raw = frame.raw
    command, source, transport = raw[8], raw[9], raw[10]
    head = {"frame_type": command, "source": source, "transport": transport}
    if transport == TRANSPORT_REQUEST:
        return {**head, "request": raw[TLV_START : len(raw) - TRAILER].hex()}
    if command not in (CMD_READ_ALL, CMD_READ_ONE):
        return head
    reading, info, settings = decode_read_all(raw)
    _tlv, unknown = walk_tlvs(raw)
    out = {**head, **reading, "device": device_info_dict(info), "settings": settings}
    if unknown is not None:
        out["unknown_tlv"] = unknown
    return out


def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """`bmsbus decode jk_uart HEX...`."""
    return decode_stream(chunks, JkUartAssembler(), decode_frame)
