"""A Supervolt / E&J BMS: answers the realtime and capacity requests with byte-exact ASCII frames."""

from __future__ import annotations

import random
import struct
from typing import Final

from ...codec import CodecError, drain
from ...emulation.base import Faults, PackState, apply_faults
from .codec import (
    CMD_CAPACITY,
    CMD_REALTIME,
    MAX_CELLS,
    REPLY_FLAG,
    TEMPERATURE_BIAS,
    WS_ALARMS,
    WS_CHARGE_FET,
    WS_CHARGE_SWITCH,
    WS_CHARGING,
    WS_DISCHARGE_FET,
    WS_DISCHARGE_SWITCH,
    WS_DISCHARGING,
    SupervoltAssembler,
    build_frame,
    is_request,
)

VERSION: Final = 0x31
ABSENT_TEMPERATURE_RAW: Final = TEMPERATURE_BIAS  # unused sensor slots read 0 °C


def _u16(v: float) -> int:
    return max(0, min(0xFFFF, round(v)))


def alarm_bits(state: PackState) -> int:
    """PackState.alarms (bit n = n-th E&J alarm in WS_ALARMS order) -> working-state bits."""
    return sum(bit for n, (bit, _) in enumerate(WS_ALARMS) if state.alarms >> n & 1)


def working_state(state: PackState) -> int:
    ws = alarm_bits(state)
    if state.current > 0:
        ws |= WS_CHARGING
    elif state.current < 0:
        ws |= WS_DISCHARGING
    if state.switches.get("charge", True):
        ws |= WS_CHARGE_FET | WS_CHARGE_SWITCH
    if state.switches.get("discharge", True):
        ws |= WS_DISCHARGE_FET | WS_DISCHARGE_SWITCH
    return ws


def realtime_payload(state: PackState, single_frame: bool) -> bytes:
    cells = [_u16(v * 1000) for v in state.cell_voltages[:MAX_CELLS]]
    cells += [0] * (MAX_CELLS - len(cells))
    temps = [max(0, min(0xFF, round(t) + TEMPERATURE_BIAS)) for t in state.temperatures[:4]]
    temps += [ABSENT_TEMPERATURE_RAW] * (4 - len(temps))
    balance = sum(1 << i for i in state.balancing if i < MAX_CELLS)
    body = bytes(7)  # date: not modelled
    body += struct.pack(f">{MAX_CELLS}H", *cells)
    body += struct.pack(">HH", _u16(max(state.current, 0.0) * 100), _u16(max(-state.current, 0.0) * 100))
    body += bytes(temps)
    body += struct.pack(">HBH", working_state(state), 0, balance)
    body += struct.pack(">HHB", min(state.cycles, 0xFFFF), min(state.cycles, 0xFFFF),
                        max(0, min(100, round(state.soc))))
    if single_frame:
        body += capacity_triple(state)
    return body


def capacity_triple(state: PackState) -> bytes:
    return struct.pack(">HHH", _u16(state.charge * 10), _u16(state.capacity * 10), _u16(state.design_capacity * 10))


class SupervoltEmulator:
    """`single_frame=True` emulates Chins/Meritsun units whose realtime reply carries the capacity triple."""

    def __init__(self, state: PackState, *, single_frame: bool = False, seed: int = 0) -> None:
        self.state = state
        self.faults = Faults()
        self.single_frame = single_frame
        self.rng = random.Random(seed)
        self._asm = SupervoltAssembler()

    def realtime_frame(self) -> bytes:
        return build_frame(0x00, CMD_REALTIME | REPLY_FLAG, VERSION, realtime_payload(self.state, self.single_frame))

    def capacity_frame(self) -> bytes:
        return build_frame(0x00, CMD_CAPACITY | REPLY_FLAG, VERSION, bytes(2) + capacity_triple(self.state))

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in drain(self._asm, data):
            if isinstance(item, CodecError) or not is_request(item):
                continue
            if item.kind == CMD_REALTIME:
                out.append(self.realtime_frame())
            elif item.kind == CMD_CAPACITY:
                out.append(self.capacity_frame())
        return apply_faults(out, self.faults, self.rng)

    def tick(self, now: float) -> list[bytes]:
        return []
