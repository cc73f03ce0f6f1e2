"""Daly drivers: the A5 conversation (BLE `daly`, RS485/UART `daly_uart`) and the D2 Modbus one (`daly2`,
which also speaks the "p81" variant of ESS-DL-BMS modules).

Options (`options:` in the device config):
- A5: `address` host address to send with (default 0x80 for `daly`, 0x40 for `daly_uart`; replies are
  accepted whatever we send with); `current_sign`: `auto` (default: learn it from the 0x93 state byte,
  protocols.md §4.5), `normal` (raw > 30000 = discharging, most firmware) or `inverted`.
- D2: `status_registers` 62 or 80 (default: try 80 once at open, fall back to 62); `variant`: `auto`
  (default: a device silent to D2 requests is asked in the p81 form, as aiobmsble does), `d2` or `p81`.
The device-level `invert_current: true` of the config flips the result for any type, on top of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from ...codec import CodecError, DeviceInfo, Frame, Reading, UnsupportedFrame, UsageError, merge
from ...driver import Driver
from .. import modbus_rtu
from . import a5, d2, p81
from .a5 import Cmd

OPTIONAL_TIMEOUT = 2.0  # for reads some firmware does not answer
SIGN_CONFIRMATIONS = 2  # consecutive state/current disagreements before the learned sign flips
CURRENT_SIGNS: dict[str, bool | None] = {"auto": None, "normal": False, "inverted": True}
D2_VARIANTS = ("auto", "d2", "p81")


def _int_option(value: Any) -> int:
    return int(value, 0) if isinstance(value, str) else int(value)


def _negate(value: float) -> float:
    return -value if value else 0.0


class DalyA5Driver(Driver):
    """Daly 0xA5 protocol over RS485/UART (host address 0x40)."""

    protocol: ClassVar[str] = "daly_uart"
    default_host: ClassVar[int] = a5.HOST_UART
    quantities = frozenset({"voltage", "current", "soc", "charge", "cycles", "cell_voltages", "temperatures",
                            "balancing", "switches", "alarms", "problem_code"})
    switches = ("charge", "discharge")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.options.options
        self.host = _int_option(opts.get("address", self.default_host))
        sign = str(opts.get("current_sign", "auto")).lower()
        if sign not in CURRENT_SIGNS:
            raise UsageError(f"current_sign must be one of {', '.join(CURRENT_SIGNS)}, not {sign!r}")
        self.invert_current: bool | None = CURRENT_SIGNS[sign]
        self.learned_invert = False
        self._sign_seen = False
        self._disagreements = 0
        self.cell_count = 0
        self.temperature_count = 0
        self.optional = {Cmd.BALANCE: True, Cmd.FAILURES: True}

    def new_assembler(self) -> a5.DalyA5Assembler:
        return a5.DalyA5Assembler()

    @staticmethod
    def _accept(command: int) -> Callable[[Frame], bool]:
        return lambda f: f.kind == command and a5.is_reply(f)

    async def _ask(self, command: int, timeout: float | None = None) -> Frame:
        return await self.transact(a5.build_request(command, self.host), self._accept(command), timeout)

    async def _ask_multi(self, command: int, count: int, per_frame: int) -> list[float]:
        """Send once, collect numbered frames until `count` values are in (BLE modules send extra frames;
        they are dropped by the next request's flush or by their data id)."""
        split = a5.cell_frame if command == Cmd.CELLS else a5.temp_frame
        accept = self._accept(command)
        parts: dict[int, list[float]] = {}
        async with asyncio.timeout(self.options.request_timeout):
            frame = await self.transact(a5.build_request(command, self.host), accept)
            while True:
                number, values = split(frame)
                parts.setdefault(number, values)
                if (joined := a5.collect(parts, count, per_frame)) is not None:
                    return joined
                frame = await self.next_frame()
                while not accept(frame):
                    frame = await self.next_frame()

    async def open(self) -> DeviceInfo:
        self.cell_count, self.temperature_count = a5.counts(await self._ask(Cmd.STATUS))
        return DeviceInfo(manufacturer="Daly", extra={"protocol": "A5", "host_address": f"{self.host:#04x}",
                                                      "cell_count": str(self.cell_count),
                                                      "temperature_count": str(self.temperature_count)})

    def current_inverted(self, current: float, bms_state: int) -> bool:
        """Whether to flip the default-sign current: the `current_sign` option if set, else what the 0x93 state byte
        shows (the first sample with enough current decides; a later change needs SIGN_CONFIRMATIONS
        consecutive disagreements, so one sample read across a charge/discharge transition cannot flip it)."""
        if self.invert_current is not None:
            return self.invert_current
        mismatch = a5.current_sign_mismatch(current, bms_state)
        if mismatch is None:
            return self.learned_invert
        if not self._sign_seen:  # the first telling sample decides; later flips need confirmation
            self._sign_seen = True
            self.learned_invert = mismatch
            if mismatch:
                self.log.info("Daly current sign inverted (the 0x93 state byte disagrees with the default sign)")
        elif mismatch != self.learned_invert:
            self._disagreements += 1
            if self._disagreements >= SIGN_CONFIRMATIONS:
                self.learned_invert = mismatch
                self._disagreements = 0
                self.log.info("Daly current sign %s (0x93 state byte disagreed with the default sign)",
                              "inverted" if mismatch else "back to default")
        else:
            self._disagreements = 0
        return self.learned_invert

    async def read(self) -> Reading:
        soc = a5.decode_reading(await self._ask(Cmd.SOC))
        mos_frame = await self._ask(Cmd.MOS)
        mos = a5.decode_reading(mos_frame)
        status_frame = await self._ask(Cmd.STATUS)
        status = a5.decode_reading(status_frame)
        self.cell_count, self.temperature_count = a5.counts(status_frame)
        if self.current_inverted(soc["current"], a5.state(mos_frame)):
            soc["current"] = _negate(soc["current"])
        parts: list[Reading] = [soc, mos, status]
        if 0 < self.cell_count <= a5.MAX_CELLS:
            parts.append({"cell_voltages": await self._ask_multi(Cmd.CELLS, self.cell_count, a5.CELLS_PER_FRAME)})
        if self.temperature_count:
            parts.append({"temperatures": await self._ask_multi(Cmd.TEMPS, self.temperature_count,
                                                                a5.TEMPS_PER_FRAME)})
        for command, supported in self.optional.items():
            if not supported:
                continue
            try:
                extra = a5.decode_reading(await self._ask(command, min(OPTIONAL_TIMEOUT,
                                                                       self.options.request_timeout)))
            except TimeoutError:
                self.optional[command] = False
                self.log.info("no answer to Daly %#04x; not asking again this session", command)
                continue
            if command == Cmd.BALANCE:
                extra["balancing"] = [i for i in extra["balancing"] if i < self.cell_count]
            parts.append(extra)
        return merge(*parts)

    async def set_switch(self, name: str, on: bool) -> None:
        if name not in self.switches:
            raise UsageError(f"{self.protocol} cannot set switch {name!r}")
        command = a5.SWITCH_COMMANDS[name]
        echo = await self.transact(a5.build_switch(name, on, self.host), self._accept(command))
        if bool(a5.payload(echo)[0]) != on:
            self.log.warning("Daly echoed %s=%s for a write of %s", name, bool(a5.payload(echo)[0]), on)
        state = a5.mos_switches(a5.payload(await self._ask(Cmd.MOS)))  # read back
        if state[name] != on:
            self.log.warning("Daly reports %s MOS %s after switching it %s (0x93 does not track the discharge "
                             "MOS on some firmware)", name, "on" if state[name] else "off", "on" if on else "off")


class DalyBleDriver(DalyA5Driver):
    """Daly 0xA5 protocol through an old Daly BLE module (host address 0x80; 16 cell frames per answer)."""

    protocol = "daly"
    default_host = a5.HOST_BLE


class DalyD2Driver(Driver):
    """Daly D2 Modbus protocol over BLE (modules named DL-...), and its p81 variant (ESS-DL-BMS: requests to
    0x81, replies from 0x51, another register map; read-only, see p81.py)."""

    protocol: ClassVar[str] = "daly2"
    quantities = frozenset({"voltage", "current", "power", "soc", "charge", "design_capacity", "cycles",
                            "cell_voltages", "temperatures", "mos_temperature", "balance_current", "balancing",
                            "switches", "alarms", "problem_code"})
    switches = ("charge", "discharge", "balance")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.options.options
        regs = opts.get("status_registers")
        if regs is not None and int(regs) not in (d2.STATUS_REGISTERS, d2.STATUS_REGISTERS_LONG):
            raise UsageError(f"daly2 status_registers must be 62 or 80, not {regs!r}")
        self.status_registers: int | None = None if regs is None else int(regs)
        variant = str(opts.get("variant", "auto")).lower()
        if variant not in D2_VARIANTS:
            raise UsageError(f"daly2 variant must be one of {', '.join(D2_VARIANTS)}, not {variant!r}")
        if variant == "p81" and regs is not None:
            raise UsageError("daly2 status_registers is a D2 setting; it does not apply to variant p81")
        self.variant = "d2" if variant == "auto" and regs is not None else variant
        self.p81_second_block = True
        self.extension = True  # the separate 0x3E block (62-register devices)
        self.balancer_switch = True
        self.design_capacity: float | None = None

    def new_assembler(self) -> modbus_rtu.ModbusRtuAssembler:
        return d2.new_assembler()

    async def _read(self, register: int, count: int, timeout: float | None = None, *, variant: str = "d2") -> Frame:
        address = p81.REPLY_ADDRESS if variant == "p81" else d2.ADDRESS
        request = (p81.read_request if variant == "p81" else d2.read_request)(register, count)

        def accept(f: Frame) -> bool:
            if f.address != address:
                return False
            if modbus_rtu.exception_code(f) is not None:
                return int(f.kind) & 0x7F == modbus_rtu.READ_HOLDING
            return f.kind == modbus_rtu.READ_HOLDING and f.raw[2] == 2 * count

        frame = await self.transact(request, accept, timeout)
        if (code := modbus_rtu.exception_code(frame)) is not None:
            raise UnsupportedFrame(f"Daly {variant} refused to read {count} registers at {register:#06x} "
                                   f"(exception {code:#04x})")
        return frame

    async def _optional(self, register: int, count: int, *, variant: str = "d2") -> Frame | None:
        try:
            return await self._read(register, count, min(OPTIONAL_TIMEOUT, self.options.request_timeout),
                                    variant=variant)
        except (TimeoutError, CodecError) as err:
            self.log.debug("Daly %s read of %d registers at %#06x failed: %s", variant, count, register,
                           err or "timeout")
            return None

    def writable_switches(self) -> tuple[str, ...]:
        if self.variant == "p81":
            return ()
        return self.switches if self.balancer_switch else ("charge", "discharge")

    async def _detect(self) -> None:
        """`variant: auto`: a D2 device answers the 80-register read or refuses it; one that stays silent is
        asked the p81 way, and if that stays silent too it is taken for a 62-register D2 device."""
        try:
            await self._read(0, d2.STATUS_REGISTERS_LONG, min(OPTIONAL_TIMEOUT, self.options.request_timeout))
            self.variant, self.status_registers = "d2", d2.STATUS_REGISTERS_LONG
            return
        except CodecError as err:
            self.log.debug("Daly D2 80-register read refused: %s", err)
            self.variant, self.status_registers = "d2", d2.STATUS_REGISTERS
            return
        except TimeoutError:
            pass
        if await self._optional(*p81.STATUS_A, variant="p81") is not None:
            self.log.info("Daly answers the p81 protocol (requests 0x81, replies 0x51)")
            self.variant = "p81"
        else:
            self.variant, self.status_registers = "d2", d2.STATUS_REGISTERS

    async def _open_p81(self) -> DeviceInfo:
        version = await self._optional(*p81.VERSION, variant="p81")
        info = p81.decode_version(version) if version is not None else DeviceInfo(manufacturer="Daly")
        info.extra["protocol"] = "p81"
        return info

    async def open(self) -> DeviceInfo:
        if self.variant == "auto":
            await self._detect()
        if self.variant == "p81":
            return await self._open_p81()
        if self.status_registers is None:
            probe = await self._optional(0, d2.STATUS_REGISTERS_LONG)
            self.status_registers = d2.STATUS_REGISTERS_LONG if probe is not None else d2.STATUS_REGISTERS
        version = await self._optional(d2.VERSION_START, d2.VERSION_COUNT)
        info = d2.decode_version(version) if version is not None else DeviceInfo(manufacturer="Daly")
        capacity = await self._optional(d2.REG_RATED_CAPACITY, 1)
        if capacity is not None:
            self.design_capacity = d2.decode_rated_capacity(capacity)["design_capacity"]
        self.balancer_switch = await self._optional(d2.REG_BALANCER, 1) is not None
        info.extra.update({"protocol": "D2", "status_registers": str(self.status_registers)})
        return info

    async def _read_p81(self) -> Reading:
        first = await self._read(*p81.STATUS_A, variant="p81")
        second = await self._optional(*p81.STATUS_B, variant="p81") if self.p81_second_block else None
        if second is None and self.p81_second_block:
            self.p81_second_block = False
            self.log.info("Daly p81 does not answer registers 0x41..; no capacity, cycles or MOS states")
        return p81.decode_status(first, second)

    async def read(self) -> Reading:
        if self.variant == "p81":
            return await self._read_p81()
        if self.status_registers is None:
            self.status_registers = d2.STATUS_REGISTERS
        reading = d2.decode_status(await self._read(0, self.status_registers))
        cells = len(reading.get("cell_voltages", ()))
        if self.status_registers == d2.STATUS_REGISTERS and self.extension:
            block = await self._optional(d2.EXTENSION_START, d2.EXTENSION_COUNT)
            if block is None:
                self.extension = False
                self.log.info("Daly D2 does not answer registers 0x3E..; no MOS temperature or balance bits")
            else:
                reading.update(d2.decode_extension(block, cells))
        if self.balancer_switch:
            switch = await self._optional(d2.REG_BALANCER, 1)
            if switch is not None:
                reading["switches"]["balance"] = bool(d2.register_value(switch))
        if self.design_capacity is not None:
            reading["design_capacity"] = self.design_capacity
        return reading

    async def set_switch(self, name: str, on: bool) -> None:
        if self.variant == "p81":
            raise UsageError(f"{self.protocol} (p81 variant) has no writable switches: the MOS control registers "
                             "are not known with confidence")
        if name not in self.writable_switches():
            raise UsageError(f"{self.protocol} cannot set switch {name!r}")
        request = d2.switch_request(name, on)
        register = d2.SWITCH_REGISTERS[name]

        def accept(f: Frame) -> bool:
            return f.address == d2.ADDRESS and int(f.kind) & 0x7F == modbus_rtu.WRITE_SINGLE

        echo = await self.transact(request, accept)
        if (code := modbus_rtu.exception_code(echo)) is not None:
            raise UnsupportedFrame(f"Daly D2 refused the {name} write (exception {code:#04x})")
        if d2.write_echo(echo) != (register, 1 if on else 0):
            self.log.warning("Daly D2 echoed %s for the %s write", d2.write_echo(echo), name)
