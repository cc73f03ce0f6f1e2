"""JK emulators (sans-I/O): byte-exact frames from a PackState.

- `JkBleEmulator`: a JK BMS behind its BLE module (JK02_24S, JK02_32S or JK04). Answers 0x97 with device
  info, 0x96 with settings and then streams cell info every `stream_interval` seconds from tick();
  applies switch and setting writes to the state and acknowledges them with the C8 ack.
- `JkUartEmulator`: a JK-B* BMS on its 0x4E57 "GPS" UART (see uart.py); answers the read-all request.
- `JkPbBusEmulator`: a JK-PB RS485 network of N slaves and an optional address-0 master (see pb.py).

The frame builders (`cell_info_frame`, `settings_frame`, `device_info_frame`, ...) are pure and public so
tests and benchmarks can make frames without an emulator.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...checksums import sum8
from ...codec import Frame, drain
from ...emulation.base import Faults, PackSimulator, PackState, apply_faults
from . import ble, pb, uart
from .ble import Layout

# --- identity ----------------------------------------------------------------------------------------

DEFAULT_IDENTITY: dict[Layout, tuple[str, str, str]] = {
    # model, hw, sw (sw decides the layout autodetect, protocols.md §1.6)
    Layout.JK02_24S: ("JK-B2A24S20P", "10.XG", "10.08"),
    Layout.JK02_32S: ("JK_PB2A16S20P", "15A", "15.38"),
    Layout.JK04: ("JK-B2A16S", "3.0", "3.3.0"),
}

# Settings an emulated JK starts with (SI units), by chemistry.
DEFAULT_SETTINGS: dict[str, dict[str, float]] = {
    "lfp": {"cell_uvp": 2.6, "cell_uvpr": 2.8, "cell_ovp": 3.65, "cell_ovpr": 3.5, "balance_trigger_delta": 0.005,
            "balance_start_voltage": 3.4, "power_off_voltage": 2.5, "soc_100_voltage": 3.45, "soc_0_voltage": 2.9},
    "nmc": {"cell_uvp": 3.0, "cell_uvpr": 3.2, "cell_ovp": 4.2, "cell_ovpr": 4.1, "balance_trigger_delta": 0.01,
            "balance_start_voltage": 3.9, "power_off_voltage": 2.9, "soc_100_voltage": 4.15, "soc_0_voltage": 3.2},
    "lto": {"cell_uvp": 1.8, "cell_uvpr": 2.0, "cell_ovp": 2.8, "cell_ovpr": 2.7, "balance_trigger_delta": 0.01,
            "balance_start_voltage": 2.4, "power_off_voltage": 1.7, "soc_100_voltage": 2.7, "soc_0_voltage": 2.0},
}
FIXED_SETTINGS: dict[str, float] = {
    "smart_sleep_voltage": 0.6, "rcv": 3.45, "rfv": 3.4, "max_charge_current": 100.0, "charge_ocp_delay": 30,
    "charge_ocp_recovery": 60, "max_discharge_current": 150.0, "discharge_ocp_delay": 300,
    "discharge_ocp_recovery": 60, "scp_recovery": 60, "max_balance_current": 2.0, "charge_otp": 70.0,
    "charge_otpr": 60.0, "discharge_otp": 70.0, "discharge_otpr": 60.0, "charge_utp": 0.0, "charge_utpr": 5.0,
    "mos_otp": 100.0, "mos_otpr": 80.0, "scp_delay_us": 1500, "device_address": 0, "precharge_time": 5,
    "heating_start": 0, "heating_stop": 5, "smart_sleep_delay": 24, "discharge_utp": -20, "discharge_utpr": -10,
    "voltage_calibration": 3.0,
}


def setting(state: PackState, name: str) -> float:
    if name in state.settings:
        return state.settings[name]
    chem = DEFAULT_SETTINGS.get(state.chemistry, DEFAULT_SETTINGS["lfp"])
    return chem.get(name, FIXED_SETTINGS.get(name, 0.0))


def adapt_identity(state: PackState, layout: Layout) -> None:
    """Give the state a model and sw version that match `layout` (autodetect reads the sw major)."""
    model, hw, sw = DEFAULT_IDENTITY[layout]
    wanted_24s = layout is not Layout.JK02_32S
    major = ble.sw_major(state.sw_version)
    if major is None or major < 3 or (major < 11) != wanted_24s or (layout is Layout.JK02_32S and major < 14):
        state.sw_version, state.hw_version = sw, hw
    if state.model in ("", "EMU"):
        state.model = model


# --- frame builders ----------------------------------------------------------------------------------

def _frame(kind: int, counter: int, payload: bytearray) -> bytes:
    """payload: bytes 6..298 (293 bytes)."""
    body = ble.RESPONSE_HEADER + bytes((kind, counter & 0xFF)) + bytes(payload)
    assert len(body) == ble.FRAME_LEN - 1
    return body + bytes((sum8(body),))


def _put(buf: bytearray, offset: int, fmt: str, value: float) -> None:
    struct.pack_into("<" + fmt, buf, offset - 6, value)


def _ascii(buf: bytearray, offset: int, size: int, text: str) -> None:
    data = text.encode("ascii", "replace")[:size]
    buf[offset - 6 : offset - 6 + size] = data.ljust(size, b"\x00")


def _mv(v: float) -> int:
    return round(v * 1000)


def _t10(v: float) -> int:
    return max(-32768, min(32767, round(v * 10)))


def cell_info_frame(state: PackState, layout: Layout, counter: int = 0) -> bytes:
    buf = bytearray(ble.FRAME_LEN - 7)
    n = len(state.cell_voltages)
    if layout is Layout.JK04:
        return _cell_info_jk04(state, counter, buf)
    c = ble.CELL_LAYOUTS[layout]
    o = 0 if layout is Layout.JK02_24S else 32
    if n > c.cells:
        raise ValueError(f"{layout} carries at most {c.cells} cells, state has {n}")
    mv = [_mv(v) for v in state.cell_voltages]
    for i, v in enumerate(mv):
        _put(buf, 6 + 2 * i, "H", v)
    _put(buf, c.mask, "I", (1 << n) - 1)
    if n:
        _put(buf, c.mask + 4, "H", round(sum(mv) / n))
        _put(buf, c.mask + 6, "H", max(mv) - min(mv))
        buf[c.max_min_cell - 6] = mv.index(max(mv))
        buf[c.max_min_cell - 5] = mv.index(min(mv))
    for i, r in enumerate(state.cell_resistances[:n]):
        _put(buf, c.resistances + 2 * i, "H", round(r * 1000))
    presence = 1
    _put(buf, c.mos_temperature, "h", _t10(state.mos_temperature))
    slots = c.temperatures + c.extra_temperatures
    if len(state.temperatures) > len(slots):
        raise ValueError(f"{layout} carries at most {len(slots)} temperature sensors")
    for i, off in enumerate(slots):
        if i < len(state.temperatures):
            presence |= 1 << (i + 1)
            _put(buf, off, "h", _t10(state.temperatures[i]))
        else:
            _put(buf, off, "h", ble.ABSENT_TEMPERATURE)
    buf[c.sensor_presence - 6] = presence
    volt_mv = sum(mv)
    cur_ma = round(state.current * 1000)
    _put(buf, 118 + o, "I", volt_mv)
    _put(buf, 122 + o, "I", min(0xFFFFFFFF, abs(volt_mv * cur_ma) // 1000))
    _put(buf, 126 + o, "i", cur_ma)
    _put(buf, c.alarms, c.alarms_fmt, state.alarms & (0xFFFF if c.alarms_fmt == "H" else 0xFFFFFFFF))
    _put(buf, 138 + o, "h", round(state.balance_current * 1000))
    buf[c.balancing_action - 6] = (2 if state.balance_current < 0 else 1) if state.balancing else 0
    buf[141 + o - 6] = max(0, min(100, round(state.soc)))
    _put(buf, 142 + o, "I", round(state.charge * 1000))
    _put(buf, 146 + o, "I", round(state.capacity * 1000))
    _put(buf, 150 + o, "I", state.cycles)
    _put(buf, 154 + o, "I", round(state.cycle_charge * 1000))
    buf[158 + o - 6] = max(0, min(100, round(state.soh)))
    _put(buf, 162 + o, "I", int(state.uptime))
    buf[c.charge_mos - 6] = int(state.switches.get("charge", False))
    buf[c.discharge_mos - 6] = int(state.switches.get("discharge", False))
    if c.heating is not None:
        buf[c.heating - 6] = int(state.switches.get("heater", False))
    if layout is Layout.JK02_32S:
        _put(buf, 226, "f", 3.0)  # battery-voltage correction factor, as real 32S units send
        _put(buf, 234, "H", round(volt_mv / 10))
        _put(buf, 246, "I", int(state.uptime * 10) & 0xFFFFFFFF)
        buf[275 - 6] = {"lfp": 0, "nmc": 1, "lto": 2}.get(state.chemistry, 0)
    return _frame(ble.TYPE_CELL_INFO, counter, buf)


def _cell_info_jk04(state: PackState, counter: int, buf: bytearray) -> bytes:
    n = len(state.cell_voltages)
    if n > ble.JK04_CELLS:
        raise ValueError(f"JK04 carries at most {ble.JK04_CELLS} cells")
    for i, v in enumerate(state.cell_voltages):
        _put(buf, 6 + 4 * i, "f", v)
    for i, r in enumerate(state.cell_resistances[:n]):
        _put(buf, 102 + 4 * i, "f", r)
    if n:
        _put(buf, 202, "f", sum(state.cell_voltages) / n)
        _put(buf, 206, "f", max(state.cell_voltages) - min(state.cell_voltages))
    _put(buf, 214, "H", 0xFFFF)
    buf[220 - 6] = (2 if state.balance_current < 0 else 1) if state.balancing else 0
    _put(buf, 222, "f", state.balance_current)
    _put(buf, 286, "I", int(state.uptime))
    return _frame(ble.TYPE_CELL_INFO, counter, buf)


def settings_frame(state: PackState, layout: Layout, counter: int = 0) -> bytes:
    buf = bytearray(ble.FRAME_LEN - 7)
    sw = state.switches
    if layout is Layout.JK04:
        buf[34 - 6] = len(state.cell_voltages)
        for row in ble.SETTINGS_JK04[1:]:
            _put(buf, row.offset, "f", setting(state, row.key))
        buf[114 - 6] = int(sw.get("balance", False))
        return _frame(ble.TYPE_SETTINGS, counter, buf)
    rows = ble.SETTINGS_JK02 + (ble.SETTINGS_JK02_32S_EXTRA if layout is Layout.JK02_32S else ())
    for row in rows:
        if row.key == "cell_count":
            value: float = len(state.cell_voltages)
        elif row.key == "nominal_capacity":
            value = state.design_capacity
        else:
            value = setting(state, row.key)
        _put(buf, row.offset, row.fmt, round(value * row.div))
    for name, off in ble.SWITCH_OFFSETS_JK02:
        _put(buf, off, "I", int(sw.get(name, False)))
    if layout is Layout.JK02_32S:
        control = 0
        for name, bit in ble.CONTROL_SWITCHES:
            control |= int(sw.get(name, False)) << bit
        control |= 1 << 3  # port switch: RS485
        _put(buf, ble.CONTROL_BITS_32S, "H", control)
    return _frame(ble.TYPE_SETTINGS, counter, buf)


def device_info_frame(state: PackState, layout: Layout, counter: int = 0, power_on_count: int = 1) -> bytes:
    buf = bytearray(ble.FRAME_LEN - 7)
    _ascii(buf, 6, 16, state.model)
    _ascii(buf, 22, 8, state.hw_version)
    _ascii(buf, 30, 8, state.sw_version)
    _put(buf, 38, "I", int(state.uptime))
    _put(buf, 42, "I", power_on_count)
    _ascii(buf, 46, 16, state.name)
    _ascii(buf, 78, 8, "250101")
    _ascii(buf, 86, 11, state.serial)
    return _frame(ble.TYPE_DEVICE_INFO, counter, buf)


def logbook_frame(entries: Sequence[tuple[int, int]], counter: int = 0) -> bytes:
    buf = bytearray(ble.FRAME_LEN - 7)
    entries = list(entries)[: (ble.FRAME_LEN - 1 - 11) // 5]
    _put(buf, 6, "I", len(entries))
    for i, (ts, code) in enumerate(entries):
        struct.pack_into("<IB", buf, 11 + 5 * i - 6, ts, code)
    return _frame(ble.TYPE_LOGBOOK, counter, buf)


# --- BLE emulator ------------------------------------------------------------------------------------

@dataclass
class JkBleEmulator:
    """A JK BMS as seen through its BLE module (FFE0/FFE1)."""

    state: PackState
    layout: Layout = Layout.JK02_32S
    faults: Faults = field(default_factory=Faults)
    stream_interval: float = 1.0
    at_noise: float = 0.0  # probability of an `AT\r\n` before a frame (JK-PB modules flood these)
    ack_after_device_info: bool = False  # fw 19.05 sends the C8 ack right after the device-info frame
    # switch and setting writes: "apply" (ack + apply), "drop" (no ack, no change: the write got lost),
    # "ack_only" (ack, no change: the BMS refused it quietly)
    write_handling: str = "apply"
    physics: PackSimulator | None = None
    seed: int = 0
    streaming: bool = False
    counter: int = 0
    commands: list[ble.Command] = field(default_factory=list)  # every command received, for tests

    def __post_init__(self) -> None:
        self.layout = Layout(self.layout)
        adapt_identity(self.state, self.layout)
        self.rng = random.Random(self.seed)
        self._asm = ble.JkBleAssembler()
        self._next_due = 0.0

    def _out(self, frames: list[bytes]) -> list[bytes]:
        frames = apply_faults(frames, self.faults, self.rng)
        if self.at_noise:
            frames = [ble.AT_NOISE * self.rng.randrange(1, 4) + f if self.rng.random() < self.at_noise else f
                      for f in frames]
        return frames

    def _count(self) -> int:
        self.counter = (self.counter + 1) & 0xFF
        return self.counter

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for frame in drain(self._asm, data):
            if not isinstance(frame, Frame):
                continue  # a bad request gets no answer, like a real BMS
            if frame.kind == ble.KIND_COMMAND:
                out += self._handle(ble.parse_command(frame.raw))
        return self._out(out)

    def _handle(self, cmd: ble.Command) -> list[bytes]:
        self.commands.append(cmd)
        s, lay = self.state, self.layout
        if cmd.command == ble.CMD_DEVICE_INFO:
            frames = [device_info_frame(s, lay, self._count())]
            return frames + [ble.ACK] if self.ack_after_device_info else frames
        if cmd.command == ble.CMD_CELL_INFO:
            self.streaming = True
            self._next_due = 0.0  # first cell-info frame on the next tick
            return [settings_frame(s, lay, self._count())]
        if cmd.command == ble.CMD_LOGBOOK:
            return [logbook_frame([(0, 0x01)], self._count())]
        for name, (register, _length) in ble.SWITCH_REGISTERS[lay].items():
            if cmd.command == register:
                if self.write_handling == "apply":
                    s.switches[name] = bool(cmd.value)
                return [] if self.write_handling == "drop" else [ble.ACK]
        for spec in ble.settings_for(lay):
            if cmd.command == spec.registers[lay]:
                value = cmd.float_value if lay is Layout.JK04 else cmd.value / spec.factor
                if self.write_handling == "apply":
                    s.settings[spec.name] = round(value, 4)
                return [] if self.write_handling == "drop" else [ble.ACK]
        return [ble.ACK] if cmd.length else []

    def tick(self, now: float) -> list[bytes]:
        if self.physics is not None:
            self.physics.step(now)
        if not self.streaming or now < self._next_due - 0.1 * self.stream_interval:  # tolerate early ticks
            return []
        self._next_due = now + self.stream_interval
        return self._out([cell_info_frame(self.state, self.layout, self._count())])


# --- UART emulator -----------------------------------------------------------------------------------

@dataclass
class JkUartEmulator:
    """A JK-B* BMS on the 0x4E57 UART: answers read-all (command 0x06) and switch writes (command 0x02)."""

    state: PackState
    faults: Faults = field(default_factory=Faults)
    protocol_version: int = 1
    physics: PackSimulator | None = None
    seed: int = 0
    record: int = 0
    ignore_writes: bool = False  # acknowledge switch writes without applying them

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._asm = uart.JkUartAssembler()
        if ble.sw_major(self.state.sw_version) in (None, 1):
            self.state.sw_version = "11.XW_S11.26___"
        if self.state.model in ("", "EMU"):
            self.state.model = "JK_B2A24S15P"

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for frame in drain(self._asm, data):
            if not isinstance(frame, Frame):
                continue  # a bad request gets no answer, like a real BMS
            out += self._handle(frame.raw)
        return apply_faults(out, self.faults, self.rng)

    def _handle(self, raw: bytes) -> list[bytes]:
        command = raw[8]
        if raw[10] != 0:  # not a request
            return []
        self.record = (self.record + 1) & 0xFFFFFF
        if command == uart.CMD_READ_ALL:
            return [uart_read_all_frame(self.state, self.protocol_version, self.record)]
        if command == uart.CMD_WRITE and len(raw) >= 13:
            ident, value = raw[11], raw[12]
            name = {v: k for k, v in uart.SWITCH_IDS.items()}.get(ident)
            if name is not None and not self.ignore_writes:
                self.state.switches[name] = bool(value)
            return [uart.build_frame(uart.CMD_WRITE, bytes((ident,)), source=0, transport=1, record=self.record)]
        if command == uart.CMD_PASSWORD:
            return [uart.build_frame(uart.CMD_PASSWORD, b"\x00", source=0, transport=1, record=self.record)]
        return []

    def tick(self, now: float) -> list[bytes]:
        if self.physics is not None:
            self.physics.step(now)
        return []


def uart_temperature(celsius: float) -> int:
    """protocols.md §2.4: raw 0..100 = °C, above 100 = negative with base 100."""
    t = round(celsius)
    return max(0, min(100, t)) if t >= 0 else min(140, 100 - t)


def uart_current(current: float, protocol_version: int) -> int:
    ca = round(current * 100)
    if protocol_version == 1:
        return (0x8000 | min(abs(ca), 0x7FFF)) if ca > 0 else min(abs(ca), 0x7FFF)
    return max(0, min(0xFFFF, 10000 - ca))


def uart_read_all_frame(state: PackState, protocol_version: int = 1, record: int = 0) -> bytes:
    s = state
    n = len(s.cell_voltages)
    tl = bytearray()

    def tlv(ident: int, fmt: str, value: object) -> None:
        tl.append(ident)
        tl.extend(struct.pack(">" + fmt, value) if fmt else bytes(value))  # type: ignore[arg-type]

    cells = b"".join(bytes((i + 1,)) + struct.pack(">H", _mv(v)) for i, v in enumerate(s.cell_voltages))
    tl += bytes((0x79, len(cells))) + cells
    temps = (list(s.temperatures) + [25.0, 25.0])[:2]
    sensors = min(2, len(s.temperatures))
    tlv(0x80, "H", uart_temperature(s.mos_temperature))
    tlv(0x81, "H", uart_temperature(temps[0]))
    tlv(0x82, "H", uart_temperature(temps[1]))
    tlv(0x83, "H", round(sum(s.cell_voltages) * 100))
    tlv(0x84, "H", uart_current(s.current, protocol_version))
    tlv(0x85, "B", max(0, min(100, round(s.soc))))
    tlv(0x86, "B", sensors)
    tlv(0x87, "H", s.cycles)
    tlv(0x89, "I", round(s.cycle_charge))
    tlv(0x8A, "H", n)
    tlv(0x8B, "H", s.alarms & 0x3FFF)
    status = (int(s.switches.get("charge", False)) | int(s.switches.get("discharge", False)) << 1
              | int(s.switches.get("balance", False)) << 2 | 1 << 3)
    tlv(0x8C, "H", status)
    tlv(0x8E, "H", round(setting(s, "cell_ovp") * n * 100))
    tlv(0x8F, "H", round(setting(s, "cell_uvp") * n * 100))
    tlv(0x90, "H", _mv(setting(s, "cell_ovp")))
    tlv(0x91, "H", _mv(setting(s, "cell_ovpr")))
    tlv(0x92, "H", 5)
    tlv(0x93, "H", _mv(setting(s, "cell_uvp")))
    tlv(0x94, "H", _mv(setting(s, "cell_uvpr")))
    tlv(0x95, "H", 5)
    tlv(0x96, "H", 300)
    tlv(0x97, "H", 150)
    tlv(0x98, "H", 300)
    tlv(0x99, "H", 100)
    tlv(0x9A, "H", 30)
    tlv(0x9B, "H", _mv(setting(s, "balance_start_voltage")))
    tlv(0x9C, "H", _mv(setting(s, "balance_trigger_delta")))
    tlv(0x9D, "B", int(s.switches.get("balance", False)))
    for ident, value in ((0x9E, 100), (0x9F, 80), (0xA0, 100), (0xA1, 80), (0xA2, 20), (0xA3, 70), (0xA4, 70)):
        tlv(ident, "H", value)
    for ident, value in ((0xA5, 0), (0xA6, 5), (0xA7, -20), (0xA8, -10)):
        tlv(ident, "h", value)
    tlv(0xA9, "B", n)
    tlv(0xAA, "I", round(s.design_capacity))
    tlv(0xAB, "B", int(s.switches.get("charge", False)))
    tlv(0xAC, "B", int(s.switches.get("discharge", False)))
    tlv(0xAD, "H", 0)
    tlv(0xAE, "B", 1)
    tlv(0xAF, "B", {"lfp": 0, "nmc": 1, "lto": 2}.get(s.chemistry, 0))
    tlv(0xB0, "H", 10)
    tlv(0xB1, "B", 20)
    tlv(0xB2, "", b"123456".ljust(10, b"\x00"))
    tlv(0xB3, "B", 0)
    tlv(0xB4, "", s.serial.encode("ascii", "replace")[:8].ljust(8, b"\x00"))
    tlv(0xB5, "", b"2501")
    tlv(0xB6, "I", int(s.uptime // 60))
    tlv(0xB7, "", s.sw_version.encode("ascii", "replace")[:15].ljust(15, b"_"))
    tlv(0xB8, "B", 0)
    tlv(0xB9, "I", round(s.capacity))
    tlv(0xBA, "", s.model.encode("ascii", "replace")[:24].ljust(24, b"\x00"))
    tlv(0xC0, "B", protocol_version)
    return uart.build_frame(uart.CMD_READ_ALL, bytes(tl), source=0, transport=1, record=record)


# --- JK-PB bus emulator ------------------------------------------------------------------------------

@dataclass
class JkPbSlave:
    address: int
    state: PackState
    counter: int = 0
    physics: PackSimulator | None = None

    def frame(self, register: int) -> bytes:
        self.counter = (self.counter + 1) & 0xFF
        if register == pb.REG_CELL_INFO:
            raw = bytearray(cell_info_frame(self.state, Layout.JK02_32S, 0))
        elif register == pb.REG_SETTINGS:
            self.state.settings["device_address"] = self.address
            raw = bytearray(settings_frame(self.state, Layout.JK02_32S, 0))
        else:
            raw = bytearray(device_info_frame(self.state, Layout.JK02_32S, 0))
        raw[5] = 0x05  # RS485 frames carry a constant here (fw 15.10)
        raw[-1] = sum8(raw[:-1])
        return bytes(raw)


@dataclass
class JkPbBusEmulator:
    """A JK-PB RS485 network: `slaves` answer FC10 trigger requests with their 300-byte frame and the FC10
    ACK; an optional master (address 0, with its own pack `master_state`) polls them every `cycle` s
    (protocols.md §3.4: per slave 0x1620 then 0x161E, then a self-broadcast of its own type 2 and 1).

    Sans-I/O like every emulator: `receive(bytes written by the collector)`, `tick(now)` for the master's
    traffic. The collector sees the master's requests too (it is a shared bus). `tick` emits at most one
    master transaction per call; ticks should come at least every ~40 ms for realistic timing. With `scan`,
    the master also probes the free addresses up to 15 (no answer, `scan_timeout` each) as [mm] measured.
    """

    slaves: list[JkPbSlave]
    master_state: PackState | None = None
    faults: Faults = field(default_factory=Faults)
    cycle: float = 4.4
    step: float = 0.04  # request -> response turnaround, s
    scan: bool = True
    scan_timeout: float = 0.22
    seed: int = 0
    requests_seen: list[tuple[int, int]] = field(default_factory=list)  # (address, register) from the collector

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._asm = pb.JkPbAssembler()
        self._queue: list[tuple[int, int]] = []
        self._cycle_start: float | None = None
        self._next_at = 0.0
        self._master_counter = 0
        for slave in self.slaves:
            adapt_identity(slave.state, Layout.JK02_32S)
        if self.master_state is not None:
            adapt_identity(self.master_state, Layout.JK02_32S)

    @property
    def state(self) -> PackState:  # the Emulator protocol's `state`: the first pack
        return self.slaves[0].state if self.slaves else (self.master_state or PackState())

    def by_address(self, address: int) -> JkPbSlave | None:
        return next((s for s in self.slaves if s.address == address), None)

    def answer(self, address: int, register: int) -> list[bytes]:
        slave = self.by_address(address)
        if slave is None or register not in pb.TRIGGER_REGISTERS:
            return []
        return apply_faults([slave.frame(register) + pb.build_ack(address, register)], self.faults, self.rng)

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for frame in drain(self._asm, data):
            if not isinstance(frame, Frame):
                continue  # a bad request gets no answer, like a real BMS
            if frame.kind != pb.KIND_REQUEST:
                continue
            address, register = frame.address or 0, int.from_bytes(frame.raw[2:4], "big")
            self.requests_seen.append((address, register))
            out += self.answer(address, register)
        return out

    def tick(self, now: float) -> list[bytes]:
        for slave in self.slaves:
            if slave.physics is not None:
                slave.physics.step(now)
        if self.master_state is None or now < self._next_at:
            return []
        if not self._queue:
            if self._cycle_start is not None and now < self._cycle_start + self.cycle:
                self._next_at = self._cycle_start + self.cycle
                return []
            self._cycle_start = now
            self._queue = [(s.address, reg) for s in self.slaves for reg in (pb.REG_CELL_INFO, pb.REG_SETTINGS)]
            if self.scan:
                used = {s.address for s in self.slaves}
                start = max(used, default=0) + 1
                self._queue += [(a, -1) for a in range(start, 16) if a not in used]  # probes, no answer
            self._queue.append((0, pb.REG_CELL_INFO))  # self-broadcast marker
            self._queue.append((0, pb.REG_SETTINGS))
        address, register = self._queue.pop(0)
        self._next_at = now + self.step
        if register == -1:
            self._next_at = now + self.scan_timeout
            return [pb.build_trigger(address, pb.REG_CELL_INFO)]
        if address == 0:  # the master's own frames, no request before them
            self._master_counter = (self._master_counter + 1) & 0xFF
            master = JkPbSlave(0, self.master_state, self._master_counter)
            return apply_faults([master.frame(register)], self.faults, self.rng)
        return [pb.build_trigger(address, register)] + self.answer(address, register)


def make_bus(slaves: int = 3, master: bool = False, cells: int = 16, chemistry: str = "lfp",
             seed: int = 0) -> JkPbBusEmulator:
    """A bus of packs at addresses 1..slaves (named "pack-<address>"), plus an address-0 master if asked."""
    from ...emulation.base import make_pack

    packs = [JkPbSlave(a, make_pack(chemistry, cells, name=f"pack-{a}", seed=seed + a)) for a in range(1, slaves + 1)]
    master_state = make_pack(chemistry, cells, name="pack-0", seed=seed) if master else None
    return JkPbBusEmulator(packs, master_state, seed=seed)


def single_slave_bus(state: PackState) -> JkPbBusEmulator:
    """The `jk_pb` entry's emulator: one pack at address 1, no master."""
    return JkPbBusEmulator([JkPbSlave(1, state)])


__all__ = ["single_slave_bus", "JkBleEmulator", "JkPbBusEmulator", "JkPbSlave", "make_bus", "JkUartEmulator", "uart_read_all_frame", "cell_info_frame", "settings_frame", "device_info_frame", "logbook_frame"]
