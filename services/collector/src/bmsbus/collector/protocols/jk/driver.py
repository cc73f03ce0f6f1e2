"""JK drivers: the conversation over a Link (the bytes are in ble.py / uart.py / pb.py)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from bmsbus.shared.models import BmsSettingSpec

from ...codec import CodecError, DeviceInfo, Frame, Reading, UsageError, merge
from ...driver import Driver
from ...links.base import Link
from . import ble, pb, uart
from .ble import Layout


class WriteNotConfirmed(CodecError):
    """A switch or setting write the BMS did not confirm: its read-back shows another value (and it may not
    have acknowledged the write either). A CodecError, so the collector answers the command `failed` with
    this message as the reason (a UsageError would be `rejected`: that is for requests we refuse to send)."""

    def __init__(self, what: str, wanted: object, got: object, acknowledged: bool | None = None) -> None:
        ack = "" if acknowledged is None else (" (acknowledged)" if acknowledged else " (no acknowledgement)")
        super().__init__(f"the BMS did not confirm {what} = {wanted}{ack}: it reads back {got}")
        self.what, self.wanted, self.got, self.acknowledged = what, wanted, got, acknowledged


_COMMON = frozenset({"voltage", "cell_voltages", "cell_resistances", "balance_current", "balancing", "switches",
                     "uptime"})
_JK02 = _COMMON | frozenset({"current", "power", "soc", "charge", "capacity", "design_capacity", "cycles",
                             "cycle_charge", "temperatures", "mos_temperature", "alarms", "problem_code"})
QUANTITIES: dict[Layout, frozenset[str]] = {
    Layout.JK02_24S: _JK02 | {"soh"},  # soh only when the 24S frame holds 1..100
    Layout.JK02_32S: _JK02 | {"soh"},
    Layout.JK04: _COMMON,
}


class JkBleDriver(Driver):
    """JK BMS over BLE (service FFE0, notify/write FFE1).

    open(): 0x97 (device info; picks the layout from the sw version unless the type forces one), then 0x96
    (settings once, then cell info streamed ~1/s). read(): the next streamed cell-info frame merged with the
    latest settings (switch states, configured capacity); 0x96 is re-sent when the stream stops and every
    `settings_interval` s so changes made in the JK app are seen. Options: settings_interval (60),
    stream_timeout (3).
    """

    protocol: ClassVar[str] = "jk"
    fixed_layout: ClassVar[Layout | None] = None
    quantities: ClassVar[frozenset[str]] = QUANTITIES[Layout.JK02_32S]
    switches: ClassVar[tuple[str, ...]] = ("charge", "discharge", "balance", "heater", "float_charge")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.layout: Layout = self.fixed_layout or Layout.JK02_32S
        self.device_info = DeviceInfo()
        self.settings: ble.Settings | None = None
        self._settings_raw: bytes | None = None
        self._settings_at = -math.inf
        self._cell_raw: bytes | None = None
        opts = self.options.options
        self.settings_interval = float(opts.get("settings_interval", 60.0))
        self.stream_timeout = float(opts.get("stream_timeout", 3.0))

    def new_assembler(self) -> ble.JkBleAssembler:
        return ble.JkBleAssembler()

    # --- frames ---------------------------------------------------------------------------------------

    def _absorb(self, frame: Frame) -> None:
        """Keep whatever a frame tells us, whichever request it answers."""
        if frame.kind == ble.TYPE_CELL_INFO:
            if self.fixed_layout is None and self.layout is not Layout.JK04 and ble.looks_like_jk04(frame.raw):
                self.log.info("cell frame is JK04 (float) layout; switching from %s", self.layout)
                self.layout = Layout.JK04
                self._decode_settings()
            self._cell_raw = frame.raw
        elif frame.kind == ble.TYPE_SETTINGS:
            self._settings_raw = frame.raw
            self._settings_at = asyncio.get_running_loop().time()
            self._decode_settings()
        elif frame.kind == ble.TYPE_DEVICE_INFO:
            self.device_info = ble.decode_device_info(frame.raw)

    def _decode_settings(self) -> None:
        if self._settings_raw is not None:
            self.settings = ble.decode_settings(self._settings_raw, self.layout)

    def _wants(self, kind: int | str):  # noqa: ANN202 - a Frame predicate
        def accept(frame: Frame) -> bool:
            self._absorb(frame)
            return frame.kind == kind

        return accept

    # --- conversation ---------------------------------------------------------------------------------

    async def open(self) -> DeviceInfo:
        try:
            await self.transact(ble.REQUEST_DEVICE_INFO, self._wants(ble.TYPE_DEVICE_INFO))
        except TimeoutError:
            self.log.warning("no device-info answer; assuming layout %s", self.layout)
        else:
            if self.fixed_layout is None:
                self.layout = ble.detect_layout(self.device_info.sw_version)
        self.device_info.extra["layout"] = str(self.layout)
        await self._request_settings()
        return self.device_info

    async def _request_settings(self) -> ble.Settings:
        """0x96: the settings frame now, and (re)starts the cell-info stream."""
        await self.transact(ble.REQUEST_CELL_INFO, self._wants(ble.TYPE_SETTINGS))
        assert self.settings is not None
        return self.settings

    async def read(self) -> Reading:
        now = asyncio.get_running_loop().time()
        if self._settings_raw is None or now - self._settings_at >= self.settings_interval:
            await self._request_settings()
        try:
            await self.transact(None, self._wants(ble.TYPE_CELL_INFO), self.stream_timeout)
        except TimeoutError:
            self.log.debug("cell-info stream stopped; re-sending 0x96")
            await self.transact(ble.REQUEST_CELL_INFO, self._wants(ble.TYPE_CELL_INFO))
        return self.reading()

    def reading(self) -> Reading:
        """The latest cell info merged with settings-derived values (switches, configured capacity)."""
        if self._cell_raw is None:
            return {}
        cell = ble.decode_cell_info(self._cell_raw, self.layout, self.device_info.sw_version)
        return merge(cell, self.settings.reading()) if self.settings is not None else cell

    # --- writes ---------------------------------------------------------------------------------------

    def writable_switches(self) -> tuple[str, ...]:
        names = tuple(ble.SWITCH_REGISTERS[self.layout])
        model = (self.device_info.model or "").upper()
        if "float_charge" in names and "PB" not in model:  # float-charge mode exists on the PB inverter BMS only
            names = tuple(n for n in names if n != "float_charge")
        return tuple(n for n in names if n in self.switches)

    def setting_values(self) -> dict[str, float]:
        """From the last settings frame decoded (re-read every `settings_interval` and after each write)."""
        values = self.settings.values if self.settings is not None else {}
        return {name: values[name] for name in self.writable_settings() if name in values}

    def setting_specs(self) -> tuple[BmsSettingSpec, ...]:
        """ble.SETTINGS of this layout; the step is what the BMS stores (JK02 writes round(value × factor))."""
        return tuple(BmsSettingSpec(name=s.name, unit=s.unit, min=s.minimum, max=s.maximum, step=1 / s.factor,
                                    description=s.description) for s in ble.settings_for(self.layout))

    async def _write(self, request: bytes) -> bool:
        """Send a write; True if the BMS acknowledged it. A missing ack is not an error by itself: the
        read-back decides (some firmware acks late or not at all)."""
        try:
            await self.transact(request, self._wants(ble.KIND_ACK), min(3.0, self.options.request_timeout))
        except TimeoutError:
            self.log.debug("no ack for write %s; checking the read-back", request.hex())
            return False
        return True

    async def set_switch(self, name: str, on: bool) -> None:
        if name not in self.writable_switches():
            raise UsageError(f"{self.protocol} ({self.layout}) cannot set switch {name!r}; "
                             f"writable: {', '.join(self.writable_switches())}")
        acked = await self._write(ble.build_switch(self.layout, name, on))
        settings = await self._request_settings()
        if settings.switches.get(name) != on:
            raise WriteNotConfirmed(f"switch {name}", on, settings.switches.get(name), acked)

    async def write_setting(self, name: str, value: float) -> None:
        """Write one of `writable_settings()` (SI units, e.g. cell_ovp=3.65 V) and confirm it by read-back."""
        if name not in self.writable_settings():
            raise UsageError(f"{self.protocol} ({self.layout}) has no writable setting {name!r}; "
                             f"have: {', '.join(self.writable_settings())}")
        current = self.settings.values if self.settings is not None else {}
        if name == "cell_ovp" and value <= current.get("cell_uvp", 0.0):
            raise UsageError(f"cell_ovp {value} V must be above cell_uvp {current['cell_uvp']} V")
        if name == "cell_uvp" and value >= current.get("cell_ovp", math.inf):
            raise UsageError(f"cell_uvp {value} V must be below cell_ovp {current['cell_ovp']} V")
        acked = await self._write(ble.build_setting(self.layout, name, value))
        settings = await self._request_settings()
        got = settings.values.get(name)
        if got is None or abs(got - value) > 0.0015:
            raise WriteNotConfirmed(f"setting {name}", value, got, acked)


class Jk24sDriver(JkBleDriver):
    protocol = "jk_24s"
    fixed_layout = Layout.JK02_24S
    quantities = QUANTITIES[Layout.JK02_24S]
    switches = ("charge", "discharge", "balance")


class Jk32sDriver(JkBleDriver):
    protocol = "jk_32s"
    fixed_layout = Layout.JK02_32S
    quantities = QUANTITIES[Layout.JK02_32S]


class Jk04Driver(JkBleDriver):
    protocol = "jk04"
    fixed_layout = Layout.JK04
    quantities = QUANTITIES[Layout.JK04]
    switches = ("balance",)


class JkUartDriver(Driver):
    """JK-B* BMS on the 0x4E57 UART/RS485 "GPS" port (115200 8N1): one read-all request per read().

    Writes: charge and discharge MOS switches (identifiers 0xAB / 0xAC, preceded by the password frame as
    [syssi-jk] does), confirmed by the next read-all. The balancer switch (0x9D) is not offered: v11
    firmware reportedly rejects it.
    """

    protocol: ClassVar[str] = "jk_uart"
    quantities: ClassVar[frozenset[str]] = frozenset({
        "voltage", "current", "power", "soc", "capacity", "design_capacity", "cycles", "cycle_charge",
        "cell_voltages", "temperatures", "mos_temperature", "switches", "alarms", "problem_code", "uptime"})
    switches: ClassVar[tuple[str, ...]] = tuple(uart.SWITCH_IDS)

    def new_assembler(self) -> uart.JkUartAssembler:
        return uart.JkUartAssembler()

    @staticmethod
    def _is_reply(frame: Frame) -> bool:
        return frame.kind in (uart.CMD_READ_ALL, uart.CMD_READ_ONE) and frame.raw[10] != uart.TRANSPORT_REQUEST

    async def _read_all(self) -> tuple[Reading, DeviceInfo]:
        frame = await self.transact(uart.REQUEST_READ_ALL, self._is_reply)
        reading, info, self.settings = uart.decode_read_all(frame.raw)
        return reading, info

    async def open(self) -> DeviceInfo:
        _reading, info = await self._read_all()
        return info

    async def read(self) -> Reading:
        reading, _info = await self._read_all()
        return reading

    async def set_switch(self, name: str, on: bool) -> None:
        request = uart.build_switch(name, on)  # UsageError for unknown names
        await self.link.send(uart.build_password())
        await asyncio.sleep(0.05)
        await self.link.send(request)
        await asyncio.sleep(0.1)
        reading, _info = await self._read_all()
        if reading.get("switches", {}).get(name) != on:
            raise WriteNotConfirmed(f"jk_uart switch {name}", on, reading.get("switches", {}).get(name))


# --- JK-PB RS485 network -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PackSample:
    """One pack's reading from a JK-PB bus: identify packs by `device_name` (None until its device info has been
    heard; the master at address 0 never answers device-info requests), not by `address`."""

    device_name: str | None
    address: int
    reading: Reading
    at: float  # loop time the cell-info frame arrived
    info: DeviceInfo | None = None


class JkPbBus:
    """Runs a JkPbBusCodec over one Link (a serial port on the RS485-2 bus) for any number of packs.

        async with link:
            bus = JkPbBus(link, addresses=(1, 2, 3))
            async for sample in bus.samples():   # one PackSample per cell-info frame heard, any pack
                publish(sample.device_name or f"address-{sample.address}", sample.reading)

    The codec sniffs while a real master (DIP address 0) polls and becomes master itself when none has been
    heard for `master_timeout` s (see pb.py). Codec options (cell_interval, identify, ...) pass through.
    """

    def __init__(self, link: Link, addresses: Iterable[int] = (1,), *, tick: float = 0.02,
                 **codec_options: Any) -> None:
        self.link = link
        self.codec = pb.JkPbBusCodec(tuple(addresses), **codec_options)
        self.tick = tick
        self.on_chunk: Callable[[bytes], None] | None = None  # raw capture hook
        self._ready: deque[PackSample] = deque(maxlen=256)

    async def step(self) -> None:
        """One turn: maybe write a request, then hear what arrives within `tick` s."""
        loop = asyncio.get_running_loop()
        request = self.codec.poll(loop.time())
        if request is not None:
            await self.link.send(request)
        try:
            async with asyncio.timeout(self.tick):
                chunk = await self.link.receive()
        except TimeoutError:
            chunk = b""
        if chunk and self.on_chunk is not None:
            self.on_chunk(chunk)
        self.codec.feed(chunk, loop.time())
        while (event := self.codec.next_event()) is not None:
            if event.kind == ble.TYPE_CELL_INFO:
                pack = self.codec.packs[event.address]
                self._ready.append(PackSample(pack.name, event.address, pack.reading(), event.at, pack.info))

    async def next_sample(self, address: int | None = None) -> PackSample:
        """The next cell-info sample (of `address` when given); safe to cancel (e.g. by a timeout)."""
        while True:
            while self._ready:
                sample = self._ready.popleft()
                if address is None or sample.address == address:
                    return sample
            await self.step()

    async def samples(self) -> AsyncIterator[PackSample]:
        while True:
            yield await self.next_sample()

    async def wait_for_info(self, address: int) -> DeviceInfo | None:
        while (pack := self.codec.packs.get(address)) is None or pack.info is None:
            await self.step()
        return pack.info


class JkPbDriver(Driver):
    """One pack on a JK-PB RS485 network (options: `address`, default 1, the pack's DIP address; codec options
    such as `master_timeout`, `cell_interval`, `identify`). Read-only: writes over the PB bus are Modbus FC10
    to the 0x1000 block and are not implemented yet. For several packs on one bus use JkPbBus."""

    protocol: ClassVar[str] = "jk_pb"
    quantities: ClassVar[frozenset[str]] = QUANTITIES[Layout.JK02_32S]
    switches: ClassVar[tuple[str, ...]] = ()
    CODEC_OPTIONS: ClassVar[frozenset[str]] = frozenset({
        "master_timeout", "idle_gap", "response_timeout", "cell_interval", "settings_interval", "identify",
        "device_info_interval"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.options.options
        self.address = int(opts.get("address", 1))
        codec_opts = {k: v for k, v in opts.items() if k in self.CODEC_OPTIONS}
        codec_opts.setdefault("cell_interval", 2.5)
        self.bus = JkPbBus(self.link, (self.address,), **codec_opts)
        self.bus.on_chunk = self._chunk

    def _chunk(self, chunk: bytes) -> None:
        if self.on_chunk is not None:
            self.on_chunk(chunk)

    def new_assembler(self) -> pb.JkPbAssembler:
        return pb.JkPbAssembler()

    async def open(self) -> DeviceInfo:
        info: DeviceInfo | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.request_timeout):
                info = await self.bus.wait_for_info(self.address)
        info = info or DeviceInfo(manufacturer="JK BMS")
        info.extra["bus_address"] = str(self.address)
        return info

    async def read(self) -> Reading:
        async with asyncio.timeout(self.options.request_timeout):
            sample = await self.bus.next_sample(self.address)
        self.codec_errors = self.bus.codec.codec_errors
        return sample.reading
