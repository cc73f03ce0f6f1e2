"""A SOK / ABC BMS: answers C0/C1/C2/C4 with byte-exact 20-byte CC frames built from a PackState."""

from __future__ import annotations

import random
import struct

from ...codec import CodecError, drain
from ...emulation.base import Faults, PackState, apply_faults
from .codec import (
    CELLS_PER_FRAME,
    CMD_CELLS,
    CMD_INFO,
    CMD_PROBLEMS,
    CMD_STATUS,
    MAX_CELLS,
    MAX_TEMPERATURES,
    PROBLEM_BITS,
    REQUEST_HEAD,
    T_CELLS,
    T_HEATER,
    T_MODEL,
    T_MOS,
    T_PROBLEMS,
    T_STATUS,
    SokAssembler,
    build_reply,
)


def _u24(v: float) -> bytes:
    return max(0, min(0xFFFFFF, round(v))).to_bytes(3, "little")


def _s24(v: float) -> bytes:
    return max(-0x800000, min(0x7FFFFF, round(v))).to_bytes(3, "little", signed=True)


class SokEmulator:
    def __init__(self, state: PackState, *, seed: int = 0) -> None:
        self.state = state
        self.faults = Faults()
        self.rng = random.Random(seed)
        self._asm = SokAssembler()

    # --- frames ---------------------------------------------------------------------------------------

    def status_frame(self) -> bytes:
        s = self.state
        body = (_u24(s.voltage * 1000) + _s24(s.current * 1000) + _u24(s.design_capacity * 1000)
                + _u24(s.charge * 1000) + struct.pack("<HB", min(s.cycles, 0xFFFF), max(0, min(100, round(s.soc)))))
        return build_reply(T_STATUS, body)

    def mos_frame(self) -> bytes:
        s = self.state
        temps = s.temperatures[:MAX_TEMPERATURES]
        body = bytes((int(s.switches.get("charge", True)), int(s.switches.get("discharge", True)), len(temps)))
        body += b"".join(struct.pack("<h", round(t)) for t in temps)
        return build_reply(T_MOS, body)

    def heater_frame(self) -> bytes:
        return build_reply(T_HEATER, bytes(6) + bytes((int(self.state.switches.get("heater", False)),)))

    def cell_frames(self) -> list[bytes]:
        cells = self.state.cell_voltages[:MAX_CELLS]
        out = []
        for start in range(0, len(cells), CELLS_PER_FRAME):
            body = b"".join(bytes((start + i + 1,)) + _u24(v * 1000)
                            for i, v in enumerate(cells[start:start + CELLS_PER_FRAME]))
            out.append(build_reply(T_CELLS, body))
        return out

    def problem_frame(self) -> bytes:
        return build_reply(T_PROBLEMS, bytes((self.state.alarms >> i) & 1 for i in range(PROBLEM_BITS)))

    def model_frame(self) -> bytes:
        return build_reply(T_MODEL, self.state.model.encode("ascii", "replace")[:16])

    def answer(self, command: int) -> list[bytes]:
        if command == CMD_STATUS:
            return [self.status_frame(), self.mos_frame()]
        if command == CMD_CELLS:
            return [self.status_frame(), self.heater_frame(), *self.cell_frames()]
        if command == CMD_PROBLEMS:
            return [self.problem_frame()]
        if command == CMD_INFO:
            return [self.model_frame()]
        return []

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in drain(self._asm, data):
            if not isinstance(item, CodecError) and item.raw[0] == REQUEST_HEAD:
                out += self.answer(int(item.kind))
        return apply_faults(out, self.faults, self.rng)

    def tick(self, now: float) -> list[bytes]:
        return []
