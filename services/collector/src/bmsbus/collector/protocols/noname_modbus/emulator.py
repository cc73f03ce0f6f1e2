"""A noname Modbus-over-NUS BMS: serves the three register blocks from a PackState."""

from __future__ import annotations

import random
import struct

from ...emulation.base import Faults, PackState, apply_faults
from .. import modbus_rtu
from .codec import COUNTS, EMPTY_CELL, MAX_CELLS, REG_CAPACITY, REG_CELLS, REG_INFO, SLAVE, TEMPERATURE_BIAS

ILLEGAL_ADDRESS = 0x02


def _u16(v: float) -> int:
    return max(0, min(0xFFFF, round(v)))


def block(state: PackState, register: int) -> bytes:
    s = state
    if register == REG_INFO:
        return struct.pack(">4H", len(s.cell_voltages[:MAX_CELLS]), min(1, len(s.temperatures)), 0, 0)
    if register == REG_CELLS:
        mv = [_u16(v * 1000) for v in s.cell_voltages[:MAX_CELLS]]
        slots = mv + [EMPTY_CELL] * (MAX_CELLS - len(mv))
        hi = max(mv, default=0)
        lo = min(mv, default=0)
        return struct.pack(f">{MAX_CELLS}H6H", *slots, hi, lo, mv.index(hi) + 1 if mv else 0,
                           mv.index(lo) + 1 if mv else 0, hi - lo, _u16(s.voltage * 100))
    if register == REG_CAPACITY:
        data = bytearray(2 * COUNTS[REG_CAPACITY])
        if s.temperatures:
            struct.pack_into(">H", data, 0, _u16(s.temperatures[0] * 10 + TEMPERATURE_BIAS))
        struct.pack_into(">8H", data, 24, _u16(max(s.current, 0.0) * 10), _u16(max(-s.current, 0.0) * 10),
                         _u16(s.soc), _u16(s.soh), _u16(s.charge * 10), _u16(s.capacity * 10),
                         _u16(s.design_capacity * 10), min(s.cycles, 0xFFFF))
        return bytes(data)
    raise KeyError(register)


class NonameModbusEmulator:
    def __init__(self, state: PackState, *, slave: int = SLAVE, seed: int = 0) -> None:
        self.state = state
        self.faults = Faults()
        self.slave = slave
        self.rng = random.Random(seed)
        self._parser = modbus_rtu.RequestParser((slave,))

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for req in self._parser.feed(data):
            if req.function == modbus_rtu.READ_HOLDING and COUNTS.get(req.register) == req.value:
                out.append(modbus_rtu.read_reply(self.slave, block(self.state, req.register)))
            else:
                out.append(modbus_rtu.exception_reply(self.slave, req.function, ILLEGAL_ADDRESS))
        return apply_faults(out, self.faults, self.rng)

    def tick(self, now: float) -> list[bytes]:
        return []
