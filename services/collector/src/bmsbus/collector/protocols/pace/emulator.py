"""A PACE BMS on RS232/RS485: answers analog (0x42) and status (0x44) requests for its address."""

from __future__ import annotations

import random
import struct

from ...codec import CodecError, drain
from ...emulation.base import Faults, PackState, apply_faults
from .codec import (
    CMD_ANALOG,
    CMD_STATUS,
    DEFAULT_ADDRESS,
    KELVIN_OFFSET,
    SYS_CHARGE_MOS,
    SYS_CHARGING,
    SYS_DISCHARGE_MOS,
    SYS_DISCHARGING,
    PaceAssembler,
    build_frame,
)

RTN_OK = 0x00
RTN_CID2_INVALID = 0x04
USER_DEFINED = 0x03  # the standard protocol variant


def _u16(v: float) -> int:
    return max(0, min(0xFFFF, round(v)))


def analog_info(s: PackState, address: int) -> bytes:
    cells = [_u16(v * 1000) for v in s.cell_voltages[:32]]
    # Sensors 0..3 pack, 4 MOS, 5 environment (fixed 25 °C).
    pack = list(s.temperatures[:4]) + [25.0] * (4 - len(s.temperatures[:4]))
    temps = [_u16(t * 10 + KELVIN_OFFSET) for t in (*pack, s.mos_temperature, 25.0)]
    return (bytes((0x00, address, len(cells))) + struct.pack(f">{len(cells)}H", *cells)
            + bytes((len(temps),)) + struct.pack(f">{len(temps)}H", *temps)
            + struct.pack(">hHHBHHH", max(-0x8000, min(0x7FFF, round(s.current * 100))), _u16(s.voltage * 1000),
                          _u16(s.charge * 100), USER_DEFINED, _u16(s.capacity * 100), min(s.cycles, 0xFFFF),
                          _u16(s.design_capacity * 100)))


def system_byte(s: PackState) -> int:
    system = 0
    if s.current > 0:
        system |= SYS_CHARGING
    elif s.current < 0:
        system |= SYS_DISCHARGING
    if s.switches.get("charge", True):
        system |= SYS_CHARGE_MOS
    if s.switches.get("discharge", True):
        system |= SYS_DISCHARGE_MOS
    return system


def status_info(s: PackState, address: int) -> bytes:
    cells = len(s.cell_voltages[:32])
    protect1, protect2, fault = s.alarms & 0xFF, (s.alarms >> 8) & 0x7F, (s.alarms >> 16) & 0xFF
    balancing = sum(1 << i for i in s.balancing if i < 16)
    return (bytes((0x00, address, cells)) + bytes(cells) + bytes((6,)) + bytes(6) + bytes(3)
            + bytes((protect1, protect2, system_byte(s), 0, fault)) + struct.pack(">H", balancing) + bytes(2))


class PaceEmulator:
    def __init__(self, state: PackState, *, address: int = DEFAULT_ADDRESS, seed: int = 0) -> None:
        self.state = state
        self.faults = Faults()
        self.address = address
        self.rng = random.Random(seed)
        self._asm = PaceAssembler()

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in drain(self._asm, data):
            if isinstance(item, CodecError) or item.address != self.address:
                continue
            if item.kind == CMD_ANALOG:
                out.append(build_frame(RTN_OK, analog_info(self.state, self.address), self.address))
            elif item.kind == CMD_STATUS:
                out.append(build_frame(RTN_OK, status_info(self.state, self.address), self.address))
            else:
                out.append(build_frame(RTN_CID2_INVALID, b"", self.address))
        return apply_faults(out, self.faults, self.rng)

    def tick(self, now: float) -> list[bytes]:
        return []
