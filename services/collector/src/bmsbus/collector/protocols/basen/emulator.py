"""Basen emulators: the BLE variant (status / general / cell blocks) and the RS485 variant (INFO)."""

from __future__ import annotations

import random
import struct

from ...codec import CodecError, drain
from ...emulation.base import Faults, PackState, apply_faults
from . import ble, uart


def _clamp(v: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(v)))


# --- BLE ---------------------------------------------------------------------------------------------

def ble_status_payload(s: PackState) -> bytes:
    temps = [_clamp(t, -128, 127) for t in s.temperatures[: ble.TEMPERATURES]]
    temps += [0] * (ble.TEMPERATURES - len(temps))
    charge_state = ble.MOS_ON if s.switches.get("charge", True) else 0
    discharge_state = ble.MOS_ON if s.switches.get("discharge", True) else 0
    # PackState.alarms: bits 0-6 charge trips, 8-14 discharge trips.
    charge_state |= s.alarms & ble.TRIP_MASK
    discharge_state |= (s.alarms >> 8) & ble.TRIP_MASK
    current, voltage = _clamp(s.current * 1000, -0x80000000, 0x7FFFFFFF), _clamp(s.voltage * 1000, 0, 0xFFFFFFFF)
    return (struct.pack("<iI", current, voltage)
            + struct.pack("<4b", *temps) + struct.pack("<I", _clamp(s.charge * 1000, 0, 0xFFFFFFFF))
            + bytes((charge_state, discharge_state, 0, 0, _clamp(s.soc, 0, 100), 0, 0, 0)))


def ble_general_payload(s: PackState) -> bytes:
    nominal_mv = _clamp(3.2 * len(s.cell_voltages) * 1000, 0, 0xFFFFFFFF)
    return (struct.pack("<III", _clamp(s.design_capacity * 1000, 0, 0xFFFFFFFF), nominal_mv,
                        _clamp(s.capacity * 1000, 0, 0xFFFFFFFF))
            + bytes(10) + struct.pack("<H", min(s.cycles, 0xFFFF)))


def ble_cells_payload(s: PackState, first: int) -> bytes:
    mv = [_clamp(v * 1000, 0, 0xFFFF) for v in s.cell_voltages[first : first + ble.CELLS_PER_BLOCK]]
    mv += [0] * (ble.CELLS_PER_BLOCK - len(mv))
    return struct.pack(f"<{ble.CELLS_PER_BLOCK}H", *mv)


class BasenBleEmulator:
    def __init__(self, state: PackState, *, seed: int = 0) -> None:
        self.state = state
        self.faults = Faults()
        self.rng = random.Random(seed)
        self._asm = ble.BasenAssembler()

    def answer(self, frame_type: int, sof: int) -> list[bytes]:
        s = self.state
        if frame_type == ble.T_STATUS:
            payload = ble_status_payload(s)
        elif frame_type == ble.T_GENERAL:
            payload = ble_general_payload(s)
        elif frame_type in ble.CELL_BLOCKS:
            payload = ble_cells_payload(s, ble.CELL_BLOCKS[frame_type])
        else:
            return []
        return [ble.build_frame(frame_type, payload, sof)]

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in drain(self._asm, data):
            if not isinstance(item, CodecError) and item.raw[3] == 1:
                out += self.answer(int(item.kind), item.raw[0])
        return apply_faults(out, self.faults, self.rng)

    def tick(self, now: float) -> list[bytes]:
        return []


# --- RS485 -------------------------------------------------------------------------------------------

def _alarm_status(s: PackState) -> bytearray:
    """PackState.alarms bit n = n-th entry of uart.STATUS_ALARMS."""
    status = bytearray(10)
    for n, (byte, bit, _) in enumerate(uart.STATUS_ALARMS):
        if s.alarms >> n & 1:
            status[byte] |= bit
    return status


def uart_info_data(s: PackState) -> bytes:
    cells = s.cell_voltages[:48]
    data = bytearray((uart.INFO_VERSION, len(cells)))
    for i, v in enumerate(cells):
        word = _clamp(v * 1000, 0, uart.CELL_MV_MASK) | (uart.CELL_BALANCING if i in s.balancing else 0)
        data += word.to_bytes(2, "big")

    def block(kind: int, *values: int) -> bytes:
        width = 4 if kind >= uart.WIDE_FROM else 2
        return bytes((kind, len(values))) + b"".join(v.to_bytes(width, "big") for v in values)

    temps = [_clamp(t + uart.TEMPERATURE_BIAS, 0, 0xFF) for t in s.temperatures[:4]]
    temp_words = [t for t in temps] + [uart.T_MOS << 8 | _clamp(s.mos_temperature + uart.TEMPERATURE_BIAS, 0, 0xFF),
                                      uart.T_AMBIENT << 8 | 25 + uart.TEMPERATURE_BIAS]
    status = _alarm_status(s)
    if s.current > 0:
        status[3] |= uart.STATUS_CHARGING[1]
    elif s.current < 0:
        status[3] |= uart.STATUS_DISCHARGING[1]
    if not s.switches.get("charge", True):
        status[2] |= uart.STATUS_CHARGE_MOS_OFF[1]
    if not s.switches.get("discharge", True):
        status[2] |= uart.STATUS_DISCHARGE_MOS_OFF[1]
    data += block(uart.B_CURRENT, _clamp(uart.CURRENT_ZERO - s.current * 100, 0, 0xFFFF))
    data += block(0x03, _clamp(s.soc * 100, 0, 0xFFFF))
    data += block(0x04, _clamp(s.charge * 100, 0, 0xFFFF))
    data += block(uart.B_TEMPERATURES, *temp_words)
    data += bytes((uart.B_STATUS, 5)) + bytes(status)
    data += block(0x07, min(s.cycles, 0xFFFF))
    data += block(0x08, _clamp(s.voltage * 100, 0, 0xFFFF))
    data += block(0x09, _clamp(s.soh * 100, 0, 0xFFFF))
    data += block(0x0A, 0)
    for kind in range(0x0B, 0x11):  # 4-byte blocks of unknown meaning, as in the published frame
        data += block(kind, 0)
    return bytes(data)


class BasenUartEmulator:
    def __init__(self, state: PackState, *, address: int = uart.DEFAULT_ADDRESS, seed: int = 0) -> None:
        self.state = state
        self.faults = Faults()
        self.address = address
        self.rng = random.Random(seed)
        self._asm = uart.BasenUartAssembler()

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in drain(self._asm, data):
            if isinstance(item, CodecError) or len(item.raw) != 6 or item.address != self.address:
                continue
            if item.kind == uart.CMD_INFO:
                out.append(uart.build_frame(uart.CMD_INFO, uart_info_data(self.state), self.address))
            else:
                out.append(uart.build_frame(int(item.kind), b"\x04", self.address))  # "CID2 invalid"
        return apply_faults(out, self.faults, self.rng)

    def tick(self, now: float) -> list[bytes]:
        return []
