"""JBD emulator (sans-I/O): byte-exact replies from a PackState.

Answers 0x03 (basic info), 0x04 (cells), 0x05 (model), the 0xE1 MOS write (sets the switches and the
software-lock protection bit 12), factory enter/exit, and the FF AA password exchange when `password` is
set (until then 0xDD requests get no answer). `duplicate=True` answers 0x03 twice like some units do;
`unit_100ma` (default: when capacities exceed 655.35 Ah) uses the 100 mA / 100 mAh unit flag; `tail`
appends unknown bytes after the control byte like newer firmware. `state.alarms & 0xFFFF` is the
protection word.
"""

from __future__ import annotations

import datetime as dt
import random

from ...checksums import jbd_complement, sum8
from ...emulation.base import Faults, PackState, apply_faults
from . import codec as jbd


def _clamp(value: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(value)))


def _sw_byte(version: str) -> int:
    major, _, minor = version.partition(".")
    try:
        return (int(major) & 0x0F) << 4 | (int(minor or 0) & 0x0F)
    except ValueError:
        return 0x10


def encode_date(date: dt.date) -> int:
    return (date.year - 2000) << 9 | date.month << 5 | date.day


class JbdEmulator:
    def __init__(self, state: PackState, *, password: str | None = None, duplicate: bool = False,
                 unit_100ma: bool | None = None, tail: bytes = b"", production_date: dt.date = dt.date(2024, 3, 1),
                 faults: Faults | None = None, seed: int = 0) -> None:
        self.state = state
        self.password = password
        self.authenticated = password is None
        self.duplicate = duplicate
        self.unit_100ma = unit_100ma
        self.tail = tail
        self.production_date = production_date
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.lock = False  # a MOS held off by 0xE1
        self.factory = False
        self.requests: list[tuple[int, int, bytes]] = []  # (read/write marker, register, data)
        self._buf = bytearray()

    def tick(self, now: float) -> list[bytes]:
        return []

    def receive(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while buf:
            if buf[0] == jbd.START and len(buf) >= 4 and buf[1] in (jbd.READ, jbd.WRITE):
                total = buf[3] + 7
                if len(buf) < total:
                    break
                frame = bytes(buf[:total])
                del buf[:total]
                body = frame[2:-3]
                if frame[-1] != jbd.END or jbd_complement(body) != int.from_bytes(frame[-3:-1], "big"):
                    continue  # a real JBD ignores bad requests
                self.requests.append((frame[1], frame[2], frame[4:-3]))
                if self.authenticated:
                    out.extend(self.answer(frame[1] == jbd.WRITE, frame[2], frame[4:-3]))
            elif buf[:2] == jbd.AUTH_HEADER and len(buf) >= 4:
                total = buf[3] + 5
                if len(buf) < total:
                    break
                frame = bytes(buf[:total])
                del buf[:total]
                if sum8(frame[2:-1]) != frame[-1]:
                    continue
                accepted = self.password is not None and frame[4:-1] == self.password.encode()
                self.authenticated = self.authenticated or accepted
                out.append(jbd.build_auth_reply(frame[2], 0 if accepted else 1))
            elif (buf[0] == jbd.START or buf[:2] == jbd.AUTH_HEADER or buf == b"\xff") and len(buf) < 4:
                break
            else:
                del buf[:1]
        if len(buf) > 512:
            buf.clear()
        return apply_faults(out, self.faults, self.rng)

    def answer(self, write: bool, register: int, data: bytes) -> list[bytes]:
        s = self.state
        if not write and register == jbd.REG_BASIC:
            reply = jbd.build_reply(register, self.basic_info())
            return [reply, reply] if self.duplicate else [reply]
        if not write and register == jbd.REG_CELLS:
            mv = b"".join(_clamp(v * 1000, 0, 0xFFFF).to_bytes(2, "big") for v in s.cell_voltages[:32])
            return [jbd.build_reply(register, mv)]
        if not write and register == jbd.REG_VERSION:
            return [jbd.build_reply(register, s.model.encode("ascii", "replace")[:64])]
        if write and register == jbd.REG_MOS and len(data) == 2:
            xx = data[1]
            s.switches["charge"] = not xx & jbd.MOS_OFF_BITS["charge"]
            s.switches["discharge"] = not xx & jbd.MOS_OFF_BITS["discharge"]
            self.lock = bool(xx & 0x03)
            return [jbd.build_reply(register)]
        if write and register == jbd.REG_ENTER_FACTORY:
            self.factory = True
            return [jbd.build_reply(register)]
        if write and register == jbd.REG_EXIT_FACTORY:
            self.factory = False
            return [jbd.build_reply(register)]
        return [jbd.build_reply(register, status=jbd.STATUS_ERROR)]

    def basic_info(self) -> bytes:
        s = self.state
        big = self.unit_100ma if self.unit_100ma is not None else max(s.design_capacity, s.charge) > 655.35
        unit = 10 if big else 100  # raw units per A / Ah
        cells = s.cell_voltages[:32]
        balance = 0
        for i in s.balancing:
            if 0 <= i < len(cells):
                balance |= 1 << i
        protection = (s.alarms & 0xFFFF) | (1 << jbd.LOCK_BIT if self.lock else 0)
        fet = (jbd.FET_BITS["charge"] if s.switches.get("charge", True) else 0) | (
            jbd.FET_BITS["discharge"] if s.switches.get("discharge", True) else 0)
        body = bytearray()
        body += _clamp(s.voltage * 100, 0, 0xFFFF).to_bytes(2, "big")
        body += _clamp(s.current * unit, -0x8000, 0x7FFF).to_bytes(2, "big", signed=True)
        body += _clamp(s.charge * unit, 0, 0xFFFF).to_bytes(2, "big")
        body += _clamp(s.design_capacity * unit, 0, 0xFFFF).to_bytes(2, "big")
        body += _clamp(s.cycles, 0, 0xFFFF).to_bytes(2, "big")
        body += encode_date(self.production_date).to_bytes(2, "big")
        body += (balance & 0xFFFF).to_bytes(2, "big") + (balance >> 16).to_bytes(2, "big")
        body += protection.to_bytes(2, "big")
        body += bytes((_sw_byte(s.sw_version), _clamp(s.soc, 0, 100), fet, len(cells), len(s.temperatures)))
        for t in s.temperatures:
            body += _clamp(t * 10 + jbd.KELVIN_OFFSET, 0, 0xFFFF).to_bytes(2, "big")
        if big or self.tail:
            body += bytes((jbd.UNIT_FLAG if big else 0,)) + self.tail
        return bytes(body)
