"""A LiTime / Redodo BMS: answers the fixed status request with a byte-exact 105-byte frame."""

from __future__ import annotations

import random
import struct

from ...codec import CodecError, drain
from ...emulation.base import Faults, PackState, apply_faults
from .codec import KIND_REQUEST, KIND_STATUS, MAX_CELLS, LiTimeAssembler, build_frame


def _clamp(v: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(v)))


def status_body(state: PackState) -> bytes:
    """Bytes 7..103 of the status reply (97 bytes)."""
    s = state
    cells = [_clamp(v * 1000, 0, 0xFFFF) for v in s.cell_voltages[:MAX_CELLS]]
    cells += [0] * (MAX_CELLS - len(cells))
    temperature = _clamp(s.temperatures[0], -0x8000, 0x7FFF) if s.temperatures else 0
    body = bytearray(97)
    struct.pack_into("<II", body, 1, _clamp(s.voltage * 1000, 0, 0xFFFFFFFF), _clamp(s.voltage * 1000, 0, 0xFFFFFFFF))
    struct.pack_into(f"<{MAX_CELLS}H", body, 16 - 7, *cells)
    struct.pack_into("<ihh", body, 48 - 7, _clamp(s.current * 1000, -0x80000000, 0x7FFFFFFF), temperature,
                     _clamp(s.mos_temperature, -0x8000, 0x7FFF))
    struct.pack_into("<HII", body, 62 - 7, _clamp(s.charge * 100, 0, 0xFFFF), _clamp(s.capacity * 100, 0, 0xFFFFFFFF),
                     int(s.switches.get("heater", False)))
    struct.pack_into("<Q", body, 76 - 7, s.alarms & 0xFFFFFFFFFFFFFFFF)
    struct.pack_into("<HIII", body, 90 - 7, _clamp(s.soc, 0, 100), _clamp(s.soh, 0, 100), max(0, s.cycles),
                     _clamp(s.cycle_charge, 0, 0xFFFFFFFF))
    return bytes(body)


class LiTimeEmulator:
    def __init__(self, state: PackState, *, seed: int = 0) -> None:
        self.state = state
        self.faults = Faults()
        self.rng = random.Random(seed)
        self._asm = LiTimeAssembler()

    def status_frame(self) -> bytes:
        return build_frame(KIND_STATUS, status_body(self.state))

    def receive(self, data: bytes) -> list[bytes]:
        out = [self.status_frame() for item in drain(self._asm, data)
               if not isinstance(item, CodecError) and item.kind == KIND_REQUEST]
        return apply_faults(out, self.faults, self.rng)

    def tick(self, now: float) -> list[bytes]:
        return []
