"""ANT emulator (sans-I/O): byte-exact 7E A1 replies from a PackState.

Answers the status request (0x01 -> 0x11), device info (0x02 -> 0x12, with the real units' six extra bytes
after the CRC unless `exact_device_info`), the optional authentication (0x23) and register writes (0x51:
charge/discharge/balance on/off, acknowledged with a 0x61 frame). `state.alarms` low byte is an abnormal
charge-MOS status code, the next byte an abnormal discharge-MOS code (0 = normal). The MOS codes go out
discharge first (byte 46), charge second (47), as the real frames show (codec.DISCHARGE_CODE_AT);
`charge_first=True` emulates a unit with the other order.
"""

from __future__ import annotations

import random

from ...checksums import crc16_modbus
from ...codec import CodecError, drain
from ...emulation.base import Faults, PackState, apply_faults
from . import codec as ant

BATTERY_TYPES = {"nmc": 0xFAF1, "lfp": 0xFAF2, "lto": 0xFAF3}


def _u(value: float, size: int) -> bytes:
    return max(0, min((1 << 8 * size) - 1, round(value))).to_bytes(size, "little")


def _s(value: float, size: int) -> bytes:
    lim = 1 << (8 * size - 1)
    return max(-lim, min(lim - 1, round(value))).to_bytes(size, "little", signed=True)


class AntEmulator:
    def __init__(self, state: PackState, *, secret: str | None = None, exact_device_info: bool = False,
                 charge_first: bool = False, faults: Faults | None = None, seed: int = 0) -> None:
        self.state = state
        self.charge_first = charge_first
        self.secret = secret
        self.authenticated = secret is None
        self.exact_device_info = exact_device_info
        self.buzzer = True
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.assembler = ant.AntAssembler()
        self.requests: list[tuple[int, int]] = []  # (func, address)

    def tick(self, now: float) -> list[bytes]:
        return []

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in drain(self.assembler, data):
            if isinstance(item, CodecError) or not ant.is_request(int(item.kind)):
                continue
            func, address = int(item.kind), int.from_bytes(item.raw[3:5], "little")
            self.requests.append((func, address))
            out.extend(self.answer(func, address, item.raw))
        return apply_faults(out, self.faults, self.rng)

    def answer(self, func: int, address: int, raw: bytes) -> list[bytes]:
        if func == ant.FUNC_AUTH:
            self.authenticated = self.authenticated or raw[6 : 6 + raw[5]] == (self.secret or "").encode()
            return []
        if not self.authenticated:
            return []
        if func == ant.FUNC_STATUS:
            return [ant.build_reply(func, 0, self.status_data())]
        if func == ant.FUNC_DEVICE_INFO:
            return [self.device_info()]
        if func == ant.FUNC_WRITE:
            s = self.state
            for name, (on, off) in ant.SWITCH_REGISTERS.items():
                if address in (on, off):
                    s.switches[name] = address == on
            if address in ant.BUZZER_REGISTERS:
                self.buzzer = address == ant.BUZZER_REGISTERS[0]
            return [ant.build_reply(func, address, b"")]
        return []

    def device_info(self) -> bytes:
        s = self.state
        data = s.model.encode()[:16].ljust(16, b"\0") + s.sw_version.encode()[:16].ljust(16, b"\0")
        frame = ant.build_reply(ant.FUNC_DEVICE_INFO, ant.DEVICE_INFO_ADDRESS, data)
        if self.exact_device_info:
            return frame
        # Real units: `len` says 0x20, the CRC covers that, then 4 reserved bytes and an unused CRC.
        extra = b"\xff\x0b\x00\x00"
        return frame[:-2] + extra + crc16_modbus(extra).to_bytes(2, "little") + ant.TAIL

    def _code(self, switch: str, code: int) -> int:
        if code:
            return code
        return ant.MOS_ON if self.state.switches.get(switch, True) else 0x0F  # 0x0F = manually off

    def status_data(self) -> bytes:
        s = self.state
        cells = s.cell_voltages[: ant.MAX_CELLS]
        temps = s.temperatures[: ant.MAX_TEMPS]
        mv = [round(v * 1000) for v in cells]
        status = 2 if s.current > 0 else 3 if s.current < 0 else 1
        mask = 0
        for i in s.balancing:
            if 0 <= i < len(cells):
                mask |= 1 << i
        hi, lo = max(mv), min(mv)
        d = bytearray()
        d += bytes((0x05, status, len(temps), len(cells)))  # bytes 6..9
        d += bytes(24)  # protection, warning, balancing bitmasks (bytes 10..33)
        d += b"".join(_u(m, 2) for m in mv)
        d += b"".join(_s(t, 2) for t in temps)
        d += _s(s.mos_temperature, 2) + _s(s.mos_temperature, 2)  # MOS, balancer
        d += _u(s.voltage * 100, 2) + _s(s.current * 10, 2) + _u(s.soc, 2) + _u(s.soh, 2)
        charge, discharge = self._code("charge", s.alarms & 0xFF), self._code("discharge", s.alarms >> 8 & 0xFF)
        d += bytes((charge, discharge) if self.charge_first else (discharge, charge))
        d += bytes((0x04 if s.switches.get("balance", True) else 0x00, 0))
        d += _u(s.design_capacity * 1e6, 4) + _u(s.charge * 1e6, 4) + _u(s.cycle_charge * 1000, 4)
        d += _s(s.voltage * s.current, 4) + _u(s.uptime, 4) + _u(mask, 4)
        d += _u(hi, 2) + _u(mv.index(hi) + 1, 2) + _u(lo, 2) + _u(mv.index(lo) + 1, 2) + _u(hi - lo, 2)
        d += _u(sum(mv) / len(mv), 2) + bytes(8)  # average; D-S and drive voltages, F40com
        d += _u(BATTERY_TYPES.get(s.chemistry, 0xFAF4), 2) + bytes(16)  # totals and times
        return bytes(d)
