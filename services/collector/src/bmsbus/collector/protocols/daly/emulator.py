"""Daly emulators (sans-I/O): byte-exact replies from a PackState.

- `DalyA5Emulator`: the 0xA5 protocol, as a BMS on RS485/UART (`transport="uart"`: ceil(cells/3) cell frames,
  ceil(sensors/7) temperature frames) or behind an old BLE module (`transport="ble"`: always 16 cell frames
  and 3 temperature frames). `inverted_current=True` emulates the firmware that reports the opposite sign.
- `DalyD2Emulator`: the D2 Modbus protocol (responder 0xD2). `long_status=False` emulates a 62-register
  device (an 80-register read gets an illegal-address exception); `extension=False` a device that does not
  answer the 0x3E block at all.
- `DalyP81Emulator`: the p81 variant (ESS-DL-BMS: requests to 0x81, replies from 0x51, p81.py's register
  map). Silent to D2 requests, as the real one is; it refuses writes (bmsbus sends none).

Both apply switch writes to the state; `state.alarms` is used as the raw 64-bit failure word (A5 0x98
bytes 0..7, D2 registers 0x3A..0x3D).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ...codec import CodecError, drain
from ...emulation.base import Faults, PackState, apply_faults
from .. import modbus_rtu
from . import a5, d2, p81
from .a5 import Cmd

U64 = (1 << 64) - 1


def _u16(value: float) -> int:
    return max(0, min(0xFFFF, round(value)))


def _u8(value: float) -> int:
    return max(0, min(0xFF, round(value)))


def _temperature(value: float) -> int:
    return _u8(value + a5.TEMPERATURE_BIAS)


def _state_code(current: float) -> int:
    return 1 if current > 0 else 2 if current < 0 else 0


def _balance_mask(cells: Sequence[int], limit: int) -> int:
    mask = 0
    for i in cells:
        if 0 <= i < limit:
            mask |= 1 << i
    return mask


class DalyA5Emulator:
    def __init__(self, state: PackState, *, transport: str = "uart", inverted_current: bool = False,
                 faults: Faults | None = None, seed: int = 0) -> None:
        if transport not in ("uart", "ble"):
            raise ValueError(f"transport {transport!r}: 'uart' or 'ble'")
        self.state = state
        self.transport = transport
        self.inverted_current = inverted_current
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.assembler = a5.DalyA5Assembler()
        self.life = 0
        self.requests: list[int] = []  # data ids asked, for tests

    def tick(self, now: float) -> list[bytes]:
        return []

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for item in drain(self.assembler, data):
            if isinstance(item, CodecError) or a5.is_reply(item):
                continue
            self.requests.append(int(item.kind))
            out.extend(self.answer(int(item.kind), a5.payload(item)))
        return apply_faults(out, self.faults, self.rng)

    def _reply(self, command: int, data: bytes) -> bytes:
        return a5.build_frame(a5.BMS_ADDRESS, command, data)

    def answer(self, command: int, data: bytes = bytes(8)) -> list[bytes]:
        s = self.state
        cells = s.cell_voltages[: a5.MAX_CELLS]
        temps = s.temperatures
        if command == Cmd.SOC:
            tenths = round(s.current * 10)
            raw = a5.CURRENT_ZERO + tenths if self.inverted_current else a5.CURRENT_ZERO - tenths
            body = (_u16(s.voltage * 10).to_bytes(2, "big") + bytes(2) + _u16(raw).to_bytes(2, "big")
                    + _u16(s.soc * 10).to_bytes(2, "big"))
            return [self._reply(command, body)]
        if command == Cmd.CELL_RANGE:
            mv = [_u16(v * 1000) for v in cells] or [0]
            hi, lo = max(mv), min(mv)
            body = (hi.to_bytes(2, "big") + bytes((mv.index(hi) + 1,)) + lo.to_bytes(2, "big")
                    + bytes((mv.index(lo) + 1, 0, 0)))
            return [self._reply(command, body)]
        if command == Cmd.TEMP_RANGE:
            t = [_temperature(v) for v in temps] or [a5.TEMPERATURE_BIAS]
            hi, lo = max(t), min(t)
            return [self._reply(command, bytes((hi, t.index(hi) + 1, lo, t.index(lo) + 1, 0, 0, 0, 0)))]
        if command == Cmd.MOS:
            self.life = (self.life + 1) & 0xFF
            body = bytes((_state_code(s.current), s.switches.get("charge", True), s.switches.get("discharge", True),
                          self.life)) + max(0, round(s.charge * 1000)).to_bytes(4, "big")
            return [self._reply(command, body)]
        if command == Cmd.STATUS:
            body = bytes((len(cells), _u8(len(temps)), s.current > 0, s.current < 0, 0)) \
                + _u16(s.cycles).to_bytes(2, "big") + bytes(1)
            return [self._reply(command, body)]
        if command == Cmd.CELLS:
            n = a5.BLE_CELL_FRAMES if self.transport == "ble" else a5.frames_needed(len(cells), a5.CELLS_PER_FRAME)
            mv = [_u16(v * 1000) for v in cells] + [0] * (3 * n)
            return [self._reply(command, bytes((i + 1,)) + b"".join(m.to_bytes(2, "big") for m in mv[3 * i : 3 * i + 3])
                                + b"\x40") for i in range(n)]
        if command == Cmd.TEMPS:
            n = a5.BLE_TEMP_FRAMES if self.transport == "ble" else a5.frames_needed(len(temps), a5.TEMPS_PER_FRAME)
            raw = [_temperature(v) for v in temps] + [0] * (7 * n)
            return [self._reply(command, bytes((i + 1, *raw[7 * i : 7 * i + 7]))) for i in range(n)]
        if command == Cmd.BALANCE:
            return [self._reply(command, _balance_mask(s.balancing, a5.MAX_CELLS).to_bytes(6, "little") + bytes(2))]
        if command == Cmd.FAILURES:
            return [self._reply(command, (s.alarms & U64).to_bytes(8, "big"))]
        if command in (Cmd.CHARGE_MOS, Cmd.DISCHARGE_MOS):
            name = "charge" if command == Cmd.CHARGE_MOS else "discharge"
            s.switches[name] = bool(data[0])
            return [self._reply(command, bytes((data[0],)) + bytes(7))]
        return []  # unknown data id: a Daly stays silent


class _ModbusEmulator:
    """A Daly that answers Modbus RTU requests to `address` (one answer per request, faults applied)."""

    def __init__(self, state: PackState, address: int, faults: Faults | None, seed: int) -> None:
        self.state = state
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.parser = modbus_rtu.RequestParser({address})
        self.requests: list[modbus_rtu.Request] = []

    def tick(self, now: float) -> list[bytes]:
        return []

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for req in self.parser.feed(data):
            self.requests.append(req)
            out.extend(self.answer(req))
        return apply_faults(out, self.faults, self.rng)

    def answer(self, req: modbus_rtu.Request) -> list[bytes]:
        raise NotImplementedError


class DalyD2Emulator(_ModbusEmulator):
    def __init__(self, state: PackState, *, long_status: bool = True, extension: bool = True,
                 balancer_switch: bool = True, faults: Faults | None = None, seed: int = 0) -> None:
        super().__init__(state, d2.ADDRESS, faults, seed)
        self.long_status = long_status
        self.extension = extension
        self.balancer_switch = balancer_switch
        self.soc_setting: float | None = None

    def answer(self, req: modbus_rtu.Request) -> list[bytes]:
        if req.function == modbus_rtu.WRITE_SINGLE:
            return self._write(req)
        start, count = req.register, req.value
        if count == 0 or count > 125:
            return [modbus_rtu.exception_reply(d2.ADDRESS, req.function, 0x03)]
        end = start + count
        if not self.extension and d2.EXTENSION_START <= start < d2.EXTENSION_START + d2.EXTENSION_COUNT:
            return []  # the device ignores the separate 0x3E block
        if start < d2.EXTENSION_START < end and not self.long_status:
            return [modbus_rtu.exception_reply(d2.ADDRESS, req.function, 0x02)]
        if start <= d2.REG_BALANCER < end and not self.balancer_switch:
            return [modbus_rtu.exception_reply(d2.ADDRESS, req.function, 0x02)]
        data = b"".join(self.register(r).to_bytes(2, "big") for r in range(start, end))
        return [modbus_rtu.read_reply(d2.ADDRESS, data, req.function)]

    def _write(self, req: modbus_rtu.Request) -> list[bytes]:
        s = self.state
        names = {v: k for k, v in d2.SWITCH_REGISTERS.items()}
        if req.register in names and (req.register != d2.REG_BALANCER or self.balancer_switch):
            s.switches[names[req.register]] = bool(req.value)
        elif req.register == 0xA7:
            self.soc_setting = req.value / 10
        else:
            return [modbus_rtu.exception_reply(d2.ADDRESS, req.function, 0x02)]
        return [modbus_rtu.write_single_request(d2.ADDRESS, req.register, req.value)]  # the echo

    def _strings(self) -> bytes:
        s = self.state
        return (s.sw_version.encode()[:16].ljust(16, b"\0") + s.hw_version.encode()[:16].ljust(16, b"\0")
                + s.model.encode()[:32].ljust(32, b"\0"))

    def register(self, r: int) -> int:
        s = self.state
        cells = s.cell_voltages[: d2.MAX_CELLS]
        temps = s.temperatures[: d2.MAX_TEMPS]
        mv = [_u16(v * 1000) for v in cells] or [0]
        traw = [_temperature(t) for t in temps] or [0]
        if r < 0x20:
            return mv[r] if r < len(cells) else 0
        if r < 0x28:
            return traw[r - 0x20] if r - 0x20 < len(temps) else 0
        alarms = (s.alarms & U64).to_bytes(8, "big")
        table = {
            0x28: _u16(s.voltage * 10), 0x29: _u16(d2.CURRENT_ZERO + s.current * 10), 0x2A: _u16(s.soc * 10),
            0x2B: max(mv), 0x2C: min(mv), 0x2D: max(traw), 0x2E: min(traw), 0x2F: _state_code(s.current),
            0x30: _u16(s.charge * 10), 0x31: len(cells), 0x32: len(temps), 0x33: _u16(s.cycles),
            0x34: 1 if s.balancing else 0, 0x35: int(s.switches.get("charge", True)),
            0x36: int(s.switches.get("discharge", True)), 0x37: _u16(sum(mv) / len(mv)), 0x38: max(mv) - min(mv),
            0x39: _u16(abs(s.voltage * s.current)),
            0x3A: int.from_bytes(alarms[0:2], "big"), 0x3B: int.from_bytes(alarms[2:4], "big"),
            0x3C: int.from_bytes(alarms[4:6], "big"), 0x3D: int.from_bytes(alarms[6:8], "big"),
            0x3E: _balance_mask(s.balancing, 16), 0x3F: _balance_mask(s.balancing, 32) >> 16,
            0x40: _u16(d2.CURRENT_ZERO + s.balance_current * 1000), 0x42: _temperature(s.mos_temperature),
            0x43: _temperature(s.mos_temperature),
            0x80: _u16(s.design_capacity * 10), 0x81: 3200 if s.chemistry == "lfp" else 3700,
            0x89: {"lfp": 0, "nmc": 1, "lto": 2}.get(s.chemistry, 0),
            0xA5: int(s.switches.get("charge", True)), 0xA6: int(s.switches.get("discharge", True)),
            0xA7: _u16((self.soc_setting if self.soc_setting is not None else s.soc) * 10),
            0xCF: int(s.switches.get("balance", True)),
        }
        if r in table:
            return table[r]
        if d2.VERSION_START <= r < d2.VERSION_START + d2.VERSION_COUNT:
            i = 2 * (r - d2.VERSION_START)
            return int.from_bytes(self._strings()[i : i + 2], "big")
        if d2.PASSWORD_START <= r < d2.PASSWORD_START + 3:
            i = 2 * (r - d2.PASSWORD_START)
            return int.from_bytes(b"123456"[i : i + 2], "big")
        return 0


class DalyP81Emulator(_ModbusEmulator):
    def __init__(self, state: PackState, *, faults: Faults | None = None, seed: int = 0) -> None:
        super().__init__(state, p81.REQUEST_ADDRESS, faults, seed)

    def answer(self, req: modbus_rtu.Request) -> list[bytes]:
        if req.function != modbus_rtu.READ_HOLDING:
            return [modbus_rtu.exception_reply(p81.REPLY_ADDRESS, req.function, 0x01)]
        if req.value == 0 or req.value > 125:
            return [modbus_rtu.exception_reply(p81.REPLY_ADDRESS, req.function, 0x03)]
        data = b"".join(self.register(r).to_bytes(2, "big") for r in range(req.register, req.register + req.value))
        return [modbus_rtu.read_reply(p81.REPLY_ADDRESS, data, req.function)]

    def _strings(self) -> bytes:
        s = self.state
        return b"".join(text.encode()[:14].ljust(14, b"\0") for text in (s.sw_version, s.model, s.hw_version,
                                                                         s.serial or ""))

    def register(self, r: int) -> int:  # noqa: C901 - one table
        s = self.state
        cells = s.cell_voltages[: p81.MAX_CELLS]
        temps = s.temperatures[: p81.MAX_TEMPS]
        mv = [_u16(v * 1000) for v in cells] or [0]
        traw = [_temperature(t) for t in temps] or [p81.TEMPERATURE_ABSENT]
        if r < 0x30:
            return mv[r] if r < len(cells) else 0
        if r < 0x38:
            return traw[r - 0x30] if r - 0x30 < len(temps) else 0
        mask = _balance_mask(s.balancing, p81.MAX_CELLS)
        problem = (s.alarms & 0xFFFFFFFF).to_bytes(4, "big")
        table = {
            0x38: _u16(s.voltage * 10), 0x39: _u16(p81.CURRENT_ZERO + s.current * 10), 0x3A: _u16(s.soc * 10),
            0x3C: len(cells), 0x3D: len(temps), 0x3E: max(mv), 0x3F: mv.index(max(mv)) + 1,
            0x40: min(mv), 0x41: mv.index(min(mv)) + 1, 0x42: max(mv) - min(mv),
            0x43: max(traw), 0x44: traw.index(max(traw)) + 1, 0x45: min(traw), 0x46: traw.index(min(traw)) + 1,
            0x47: max(traw) - min(traw), 0x48: _state_code(s.current), 0x4B: _u16(s.charge * 10),
            0x4C: _u16(s.cycles), 0x4D: 1 if s.balancing else 0,
            0x4E: _u16(p81.CURRENT_ZERO + s.balance_current * 1000),
            0x4F: mask & 0xFFFF, 0x50: (mask >> 16) & 0xFFFF, 0x51: (mask >> 32) & 0xFFFF,
            0x52: int(s.switches.get("charge", True)), 0x53: int(s.switches.get("discharge", True)),
            0x57: _u16(sum(mv) / len(mv)), 0x58: _u16(abs(s.voltage * s.current)),
            0x5A: _temperature(s.mos_temperature), 0x5B: _temperature(s.mos_temperature),
            0x6D: int.from_bytes(problem[0:2], "big"), 0x6E: int.from_bytes(problem[2:4], "big"),
        }
        if r in table:
            return table[r]
        start, count = p81.VERSION
        if start <= r < start + count:
            i = 2 * (r - start)
            return int.from_bytes(self._strings()[i : i + 2].ljust(2, b"\0"), "big")
        return 0
