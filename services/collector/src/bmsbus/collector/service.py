"""The collector service: one supervised task per BMS, one outbox, one bus connection.

Device tasks never wait for the broker: they read their BMS on their own schedule and put messages
in the outbox. The publisher drains the outbox while the broker is reachable; retained state (birth,
meta, link) is re-published on every reconnect. A slow or dead BMS only delays itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from bmsbus.shared import __version__
from bmsbus.shared.bus import Backoff, Bus, Inbox, run_connected
from bmsbus.shared.config import Config, DeviceConfig
from bmsbus.shared.models import (Birth, BirthDevice, BmsSettingSpec, Command, CommandResult, Link, Meta, Sample,
                                  SwitchSpec)
from bmsbus.shared.quantities import SAMPLE_KEYS
from bmsbus.shared.runner import ServiceSpec, add_service_command
from bmsbus.shared.topics import OFFLINE, ONLINE, Topics, slug

from . import protocols
from .codec import CodecError, DeviceInfo, Reading, UsageError
from .driver import Driver, DriverOptions, ProtocolEntry
from .health import Health
from .links.base import Link as LinkProto
from .links.base import LinkClosed, LinkError, LinkTimeout
from .outbox import Outbox, Outgoing  # noqa: F401 - Outgoing re-exported for older imports
from .systemd import run_watchdog

if TYPE_CHECKING:
    from .diag import Capture

log = logging.getLogger("bmsbus.collector")
T = TypeVar("T")

SIMULATED = "simulated"


# --- device supervision --------------------------------------------------------------------------

BLE_KINDS = frozenset({"ble", "aiobmsble"})  # links that connect through one of this host's BlueZ adapters
POWER_CYCLE_EVERY = 300.0  # s: at most one adapter power cycle per adapter in this time
POWER_CYCLE_TIMEOUT = 20.0  # s for the whole power-cycle command (both halves of the default one)
DEFAULT_ADAPTER = "hci0"  # what `{adapter}` becomes for a device without `adapter:`


class LinkConfigError(LinkError):
    """The device config cannot make a link (`bmsbus config check` names the same problem)."""


def cannot_heal(exc: BaseException) -> bool:
    """Errors a retry cannot fix: a refused PIN, a proxy refusing our key, a config that makes no link.

    The transport modules are looked up in sys.modules rather than imported: a module never imported
    cannot have raised its error, and a collector of simulated devices need not load bleak for this."""
    if isinstance(exc, LinkConfigError):
        return True
    for module, name in ((f"{__package__}.links.ble", "PairingFailed"),
                         (f"{__package__}.links.esphome", "ProxyAuthError")):
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return True
    return False


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def resolve(dev: DeviceConfig) -> ProtocolEntry:
    name = (dev.protocol or "jk_32s") if dev.type == SIMULATED else dev.type
    return protocols.get(name)


def open_link(dev: DeviceConfig, entry: ProtocolEntry, *, proxies: Sequence[Any] | None = None,
              log: logging.Logger | None = None) -> LinkProto:
    """The link for one device, not yet connected: the emulator for `simulated`, else what links.factory
    chooses (BlueZ, an ESPHome proxy of `proxies`, serial, or an aiobmsble type's own)."""
    if dev.type == SIMULATED:
        from .simulated import simulated_link

        return simulated_link(dev, entry)
    from .links.factory import open_link as open_real_link

    return open_real_link(dev, entry, proxies=proxies, log=log)


def planned_transport(dev: DeviceConfig, entry: ProtocolEntry) -> str | None:
    """The transport a device will use ("ble", "esphome", "serial", "emulated"), None if its config makes none."""
    if dev.type == SIMULATED:
        return "emulated"
    if getattr(entry.driver, "owns_transport", False):
        return "ble"
    from .links.factory import choose_transport

    try:
        return choose_transport(dev, entry)
    except LinkError:
        return None


JK_PB_BUS = "jk_pb"


def bus_addresses(dev: DeviceConfig, entry: ProtocolEntry) -> tuple[int, ...] | None:
    """JK-PB bus mode: `options.addresses` (the DIP addresses to poll when no master does) on a `jk_pb`
    device publishes every pack heard on the bus as its own bms. None: a plain one-pack device."""
    if entry.name != JK_PB_BUS or "addresses" not in dev.options:
        return None
    raw = dev.options["addresses"]
    if not isinstance(raw, list) or not all(isinstance(a, int) and not isinstance(a, bool) and 1 <= a <= 15
                                            for a in raw):
        raise ValueError(f"must be a list of pack addresses 1..15 (the packs' DIP switches), got {raw!r}")
    return tuple(raw)


async def run_power_cycle(command: Sequence[str] | None, adapter: str, log: logging.Logger) -> bool:
    """Power an adapter off and on: `command` with `{adapter}` filled in, or bluetoothctl (select the
    controller, power off, 1 s, power on). Never through a shell; killed after POWER_CYCLE_TIMEOUT s."""
    if command:
        steps: list[tuple[list[str], bytes | None]] = [([a.replace("{adapter}", adapter) for a in command], None)]
    else:
        controller = adapter
        if not _is_controller_address(adapter):
            try:
                controller = await _controller_address(adapter)
            except Exception as exc:  # noqa: BLE001 - no D-Bus / BlueZ: nothing to power-cycle, say why
                log.warning("bt_power_cycle: cannot find the address of %s (%s); not power-cycled", adapter, exc)
                return False
        select = f"select {controller}\n"
        steps = [(["bluetoothctl"], f"{select}power off\nquit\n".encode()), (["sleep", "1"], None),
                 (["bluetoothctl"], f"{select}power on\nquit\n".encode())]
    try:
        async with asyncio.timeout(POWER_CYCLE_TIMEOUT):
            for argv, script in steps:
                if argv == ["sleep", "1"]:
                    await asyncio.sleep(1.0)
                    continue
                if not await _run_step(argv, script, log):
                    return False
    except TimeoutError:
        log.warning("bt_power_cycle: %s did not finish within %.0f s", adapter, POWER_CYCLE_TIMEOUT)
        return False
    return True


async def _run_step(argv: list[str], script: bytes | None, log: logging.Logger) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if script is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as exc:
        log.warning("bt_power_cycle: cannot run %s: %s", argv[0], exc)
        return False
    try:
        out, _ = await proc.communicate(script)
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave it running
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        log.warning("bt_power_cycle: %s exited with %s: %s", " ".join(argv), proc.returncode,
                    out.decode(errors="replace").strip()[-300:])
        return False
    return True


def _is_controller_address(adapter: str) -> bool:
    parts = adapter.split(":")
    return len(parts) == 6 and all(len(p) == 2 for p in parts)


async def _controller_address(adapter: str) -> str:
    """hciN -> its controller address (bluetoothctl selects controllers by address only)."""
    from bluetooth_adapters import get_bluetooth_adapter_details

    details = await get_bluetooth_adapter_details()
    address = (details.get(adapter) or {}).get("org.bluez.Adapter1", {}).get("Address")
    if not address:
        raise LookupError(f"no adapter {adapter}; have {sorted(details) or 'none'}")
    return str(address)


class Coordination:
    """What the device runners of one collector share.

    - the ESPHome proxies: one API connection per proxy for every device (`hold_proxies` keeps them open
      for the collector's life, so per-sample connects never wait for an API handshake);
    - BLE connect turns: one lock per adapter, as BlueZ and most controllers handle parallel connects badly
      (serial and proxy devices do not take turns);
    - the sampling turn with `concurrent_sampling: false`: one read at a time, collector-wide;
    - adapter power cycles (`bt_power_cycle`): at most one per adapter per POWER_CYCLE_EVERY s;
    - `on_new_bms`: called when a runner starts publishing a bms id the birth does not list yet.
    """

    def __init__(self, cfg: Config) -> None:
        c = cfg.collector
        if c.esphome_proxies:
            from .links.factory import proxy_configs

            self.proxies: list[Any] = proxy_configs(c.esphome_proxies)
        else:
            self.proxies = []
        self.connect_locks: dict[str, asyncio.Lock] = {}
        self.sampling_lock: asyncio.Lock | None = None if c.concurrent_sampling else asyncio.Lock()
        self.power_cycle_after = c.bt_power_cycle
        self.power_cycle_command = c.bt_power_cycle_command
        self.power_cycled_at: dict[str, float] = {}  # adapter -> monotonic time of its last power cycle
        self.power_cycles = 0
        self.on_new_bms: Callable[[], None] | None = None

    def connect_lock(self, adapter: str | None) -> asyncio.Lock:
        return self.connect_locks.setdefault(adapter or "default", asyncio.Lock())

    @contextlib.asynccontextmanager
    async def sampling_turn(self) -> AsyncIterator[None]:
        if self.sampling_lock is None:
            yield
            return
        async with self.sampling_lock:
            yield

    @contextlib.asynccontextmanager
    async def hold_proxies(self, needed: bool) -> AsyncIterator[None]:
        if not (needed and self.proxies):
            yield
            return
        from .links.esphome import hold_pool

        async with hold_pool(self.proxies):
            yield

    async def power_cycle(self, adapter: str | None, log: logging.Logger) -> bool:
        """Power-cycle `adapter` unless it was done less than POWER_CYCLE_EVERY s ago (by any device)."""
        key = adapter or "default"
        now = time.monotonic()
        last = self.power_cycled_at.get(key)
        if last is not None and now - last < POWER_CYCLE_EVERY:
            return False
        self.power_cycled_at[key] = now  # before the first await: a second failing device does not start another
        self.power_cycles += 1
        log.warning("power-cycling Bluetooth adapter %s after repeated failures (bt_power_cycle)",
                    adapter or DEFAULT_ADAPTER)
        async with self.connect_lock(adapter):  # no device on this adapter connects while it is off
            return await run_power_cycle(self.power_cycle_command, adapter or DEFAULT_ADAPTER, log)


class DeviceCapture:
    """`capture: true`: a diag.Capture of one device, fed by the driver's on_chunk hook (received chunks) and
    a diag.CaptureLink (sent ones). A capture that cannot be written (disk full, permissions) turns itself
    off with one error logged: sampling never fails because of it."""

    def __init__(self, capture: Capture, log: logging.Logger) -> None:
        self.capture: Capture | None = capture
        self.path = capture.path
        self.log = log
        self.error: str | None = None

    def record(self, data: bytes, direction: str = "rx") -> None:
        capture = self.capture
        if capture is None:
            return
        try:
            capture.record(data, direction)
        except OSError as exc:
            self.capture, self.error = None, str(exc)
            self.log.error("capture to %s failed (%s); capturing stops for this device until restart", self.path, exc)
            with contextlib.suppress(OSError):
                capture.close()

    def chunk(self, data: bytes) -> None:
        self.record(data, "rx")

    def wrap(self, link: LinkProto) -> LinkProto:
        if self.capture is not None:
            self.capture.meta.setdefault("transport", link.kind)
        if hasattr(link, "read_char"):
            return link  # a GATT-level link (Victron) is used through its own methods: a wrapper would hide them
        from .diag import CaptureLink

        return CaptureLink(link, self)  # type: ignore[arg-type,return-value]  # record() is all it calls

    def close(self) -> None:
        if self.capture is not None:
            with contextlib.suppress(OSError):
                self.capture.close()


class Averager:
    """V, I and P averaged over the samples between two publishes; everything else is the latest."""

    AVERAGED = ("voltage", "current", "power")

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, reading: Reading) -> None:
        for k in self.AVERAGED:
            if k in reading:
                self.sums[k] = self.sums.get(k, 0.0) + reading[k]
                self.counts[k] = self.counts.get(k, 0) + 1

    def apply(self, reading: Reading) -> Reading:
        out = dict(reading)
        for k in self.AVERAGED:
            if self.counts.get(k):
                out[k] = self.sums[k] / self.counts[k]
        self.sums.clear()
        self.counts.clear()
        return out


# --- declared BMS settings -----------------------------------------------------------------------

def current_setting_values(driver: Driver) -> dict[str, float]:
    """The current values of the driver's writable settings, as last read from the BMS (finite numbers only)."""
    values = driver.setting_values()
    if not isinstance(values, Mapping):
        return {}
    out: dict[str, float] = {}
    for name in driver.writable_settings():
        v = values.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)
    return out


class BmsPublisher:
    """One bms id on the bus: its retained meta and link, and its samples (own seq; V, I and P averaged
    over publish_period). A device runner is one; each pack heard on a JK-PB bus gets one of its own."""

    def __init__(self, bms_id: str, dev: DeviceConfig, cfg: Config, topics: Topics, outbox: Outbox, boot: str,
                 log: logging.Logger) -> None:
        self.id = bms_id
        self.dev = dev
        self.cfg = cfg
        self.topics = topics
        self.outbox = outbox
        self.boot = boot
        self.log = log
        self.sample_period = dev.sample_period or cfg.collector.sample_period
        self.publish_period = dev.publish_period or cfg.collector.publish_period or self.sample_period
        self.seq = 0
        self.failures = 0
        self.last_sample: Sample | None = None
        self.link_state: Link | None = None
        self.bad_values = 0
        self.averager = Averager()
        self._next_publish = -math.inf  # the first reading is published at once: nothing to average yet
        self._meta: bytes | None = None
        self._meta_model: Meta | None = None

    def _link(self, state: str, error: str | None, rssi: int | None) -> Link:
        now = time.time()
        since = self.link_state.since if self.link_state and self.link_state.state == state else now
        return Link(bms=self.id, state=state, ok=state == "connected", ts=now, rssi=rssi,  # type: ignore[arg-type]
                    last_error=error, consecutive_failures=self.failures, since=since)

    def publish_link(self, state: str, error: str | None = None, rssi: int | None = None) -> None:
        self.link_state = self._link(state, error, rssi)
        self.outbox.put(self.topics.bms_link(self.id), self.link_state.to_json(), retain=True)

    def publish_meta(self, info: Any, *, protocol: str, transport: str, quantities: Iterable[str],
                     switches: Iterable[str] = (), settings: Iterable[BmsSettingSpec] = (),
                     setting_values: Mapping[str, float] | None = None, name: str | None = None) -> None:
        """Retained, so only when it changed (a `keep_alive: false` device opens its driver every sample)."""
        specs = list(settings)
        meta = Meta(
            bms=self.id, collector=self.cfg.collector.id, name=name or self.dev.name, type=self.dev.type,
            protocol=protocol, transport=transport,
            manufacturer=info.manufacturer, model=info.model, hw_version=info.hw_version,
            sw_version=info.sw_version, serial=info.serial,
            quantities=sorted(set(quantities) & SAMPLE_KEYS),
            switches=[SwitchSpec(name=s) for s in switches],
            settings=[s.name for s in specs],
            setting_specs=specs, setting_values=dict(setting_values or {}),
            extra={k: str(v) for k, v in (info.extra or {}).items()},
        )
        self._put_meta(meta)

    def publish_setting_values(self, values: Mapping[str, float]) -> None:
        """The BMS's settings as just read: the meta is re-published when they changed (a write from the bus,
        or a change made in the vendor's app that a periodic read found)."""
        meta = self._meta_model
        if meta is not None and dict(values) != meta.setting_values:
            self._put_meta(meta.model_copy(update={"setting_values": dict(values)}))

    def _put_meta(self, meta: Meta) -> None:
        self._meta_model = meta
        payload = meta.to_json()
        if payload != self._meta:
            self._meta = payload
            self.outbox.put(self.topics.bms_meta(self.id), payload, retain=True)

    def make_sample(self, reading: Reading, ts: float) -> Sample | None:
        values: dict[str, Any] = {}
        for k, v in reading.items():
            if k not in SAMPLE_KEYS:
                continue
            if isinstance(v, float) and not math.isfinite(v):
                continue  # absent, never NaN
            values[k] = v
        if "current" in values:
            factor = self.dev.current_calibration * (-1.0 if self.dev.invert_current else 1.0)
            values["current"] *= factor
            if "voltage" in values:
                values["power"] = values["voltage"] * values["current"]
            elif "power" in values:
                values["power"] *= factor
        elif "power" not in values and "voltage" in values and "current" in values:
            values["power"] = values["voltage"] * values["current"]
        envelope = {"bms": self.id, "ts": ts, "boot": self.boot, "seq": self.seq}
        for _ in range(len(values) + 1):
            try:
                sample = Sample(**envelope, **values)
                break
            except ValidationError as exc:
                # Drop only the offending values; the rest of the reading is still worth having.
                bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"] and e["loc"][0] in values}
                if not bad:
                    self.log.warning("reading rejected: %s", exc.errors()[0]["msg"])
                    return None
                self.bad_values += len(bad)
                self.log.warning("dropped invalid values %s from a reading", sorted(bad))
                for k in bad:
                    values.pop(k)
        else:
            return None
        self.seq += 1
        return sample

    def offer(self, reading: Reading, ts: float) -> Sample | None:
        """One reading taken; published when publish_period is due (averaged with the ones before it)."""
        self.averager.add(reading)
        now = time.monotonic()
        if now < self._next_publish - 0.05 * self.sample_period:
            return None
        # Keep the phase while on time; after a gap (a slow connect, an outage) start over from now.
        due = self._next_publish + self.publish_period
        self._next_publish = due if due > now else now + self.publish_period
        sample = self.make_sample(self.averager.apply(reading), ts)
        if sample is not None:
            self.last_sample = sample
            self.outbox.put(self.topics.bms_sample(self.id), sample.to_json())
        return sample


class DeviceRunner(BmsPublisher):
    """Supervises one configured device: connects, reads every sample_period, publishes, backs off and
    reconnects on failure; runs commands on the same link, one exchange at a time.

    `keep_alive: true` holds the link for as long as it works; `false` connects, opens, reads one sample and
    disconnects, every sample_period. A driver's `background()` (keep-alives, notifications) runs next to
    the reads for the life of each session. A `jk_pb` device with `options.addresses` reads the whole
    RS485 bus and publishes every pack as `<id>_<pack name>` (see `_bus_session`).
    """

    MAX_REMEMBERED_COMMANDS = 256
    OPEN_TIMEOUT = 30.0  # s for driver.open() once the link is up
    PACK_NAME_WAIT = 60.0  # s a JK-PB pack may stay unnamed before it is published under its address
    BUS_SILENCE = 30.0  # s without any pack heard before a JK-PB bus session counts as failed

    def __init__(self, dev: DeviceConfig, cfg: Config, topics: Topics, outbox: Outbox, boot: str,
                 coordination: Coordination | None = None) -> None:
        device_log = logging.getLogger(f"bmsbus.collector.{dev.id}")
        if dev.debug:
            device_log.setLevel(logging.DEBUG)
        super().__init__(dev.id, dev, cfg, topics, outbox, boot, device_log)  # type: ignore[arg-type]
        self.id: str = dev.id  # type: ignore[assignment]
        self.entry = resolve(dev)
        self.shared = coordination or Coordination(cfg)
        self.backoff = Backoff(first=2.0, factor=1.8, cap=120.0)
        self.driver: Driver | None = None
        self.transport = planned_transport(dev, self.entry)
        self.transport_kind: str | None = None  # kind of the latest link built ("ble", "serial", ...)
        self.connects = 0  # sessions whose link came up (a keep_alive: false device makes one per sample)
        self.connect_window: tuple[float, float] | None = None  # monotonic start/end of the latest link connect
        self.retry_in: float | None = None  # s until the next attempt, after the latest failure
        self.config_error: str | None = None
        self.codec_errors = 0  # bus mode: the bus codec's count (a one-pack device's is its driver's)
        self.codec_errors_total = 0  # of finished sessions (each driver and bus codec counts from 0)
        try:
            self.addresses = bus_addresses(dev, self.entry)
        except ValueError as exc:
            self.addresses, self.config_error = None, f"options.addresses: {exc}"
        self.packs: dict[str, BmsPublisher] = {}  # bus mode: every pack heard, by bms id
        self._pack_ids: dict[int, str] = {}  # bus mode: address -> bms id, for this session
        self.capture = self._open_capture()
        self._simulated: Any = None  # the emulated link of a simulated device (its emulator lives on)
        self._io_lock = asyncio.Lock()  # reads and commands take turns on the link
        self._commands_seen: OrderedDict[str, CommandResult | None] = OrderedDict()

    # -- what the collector asks
    def birth_devices(self) -> list[BirthDevice]:
        if self.addresses is None:
            return [BirthDevice(bms=self.id, type=self.dev.type, name=self.dev.name, address=self.dev.address)]
        return [BirthDevice(bms=p.id, type=self.dev.type, name=p.dev.name, address=self.dev.address)
                for p in self.packs.values()]

    # -- link state
    def publish_link(self, state: str, error: str | None = None, rssi: int | None = None) -> None:
        if self.addresses is None:
            super().publish_link(state, error, rssi)
            return
        # Bus mode: the serial port is no bms of its own; every pack on it shares its state.
        self.link_state = self._link(state, error, rssi)
        for pack in self.packs.values():
            pack.failures = self.failures
            pack.publish_link(state, error, rssi)

    def _connected(self, rssi: int | None) -> None:
        """The session works: failures are over; `connected` is published when something changed."""
        self.failures = 0
        self.backoff.reset()
        current = self.link_state
        if current is None or current.state != "connected" or current.rssi != rssi:
            self.publish_link("connected", rssi=rssi)

    # -- the device loop
    async def run(self) -> None:
        try:
            while True:
                if self.link_state is None or self.link_state.state != "connected":
                    self.publish_link("connecting")
                try:
                    if self.config_error is not None:
                        raise LinkConfigError(self.config_error)
                    if self.addresses is not None:
                        await self._bus_session(self.addresses)
                    elif self.dev.keep_alive:
                        await self._hold_link()
                    else:
                        await self._connect_per_sample()
                except (LinkError, CodecError, TimeoutError, OSError) as exc:
                    await self._failed(exc)
                except Exception as exc:  # noqa: BLE001 - a driver bug costs this device a reconnect, not the collector
                    if self.failures == 0:
                        self.log.exception("unexpected error (a bug: please report it with this traceback)")
                    await self._failed(exc)
                else:
                    return
        finally:
            self.driver = None
            if self.capture is not None:
                self.capture.close()

    async def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        error = describe(exc)
        if cannot_heal(exc):
            # A wrong PIN or key stays wrong: waiting the longest delay at once keeps us from hammering a
            # device (or a proxy's auth) that will refuse the same way every time.
            delay = self.backoff.cap * random.uniform(0.8, 1.0)
            state, error = "failed", f"{error} (retrying cannot fix this; next try in {delay:.0f} s)"
            (self.log.error if self.failures == 1 else self.log.debug)("%s", error)
        else:
            delay = self.backoff.next()
            state = "failed" if self.failures >= 3 else "disconnected"
            (self.log.warning if self.failures <= 3 else self.log.debug)(
                "%s; reconnecting in %.1f s (failure %d)", error, delay, self.failures)
        self.retry_in = delay
        self.publish_link(state, error)
        every = self.shared.power_cycle_after
        if every and not cannot_heal(exc) and self.transport_kind in BLE_KINDS and self.failures >= every:
            await self.shared.power_cycle(self.dev.adapter, self.log)
        await asyncio.sleep(delay)

    # -- sessions
    def _build_link(self) -> LinkProto:
        """A new, unconnected link. A config that cannot make one is a LinkConfigError (never retried fast)."""
        try:
            if self.dev.type == SIMULATED:
                link = self._simulated_link()
            else:
                link = open_link(self.dev, self.entry, proxies=self.shared.proxies, log=self.log)
        except (LinkError, ValueError) as exc:
            raise LinkConfigError(str(exc)) from exc
        self.transport_kind = link.kind
        return self.capture.wrap(link) if self.capture is not None else link

    def _simulated_link(self) -> LinkProto:
        """The same emulated BMS on every connect, as with real hardware: its switch states and charge carry
        over a reconnect (and every sample of a keep_alive: false device)."""
        previous = self._simulated
        if previous is None:
            link = open_link(self.dev, self.entry)
        else:
            from .links.emulated import EmulatedLink

            link = EmulatedLink(previous.emulator, mtu=previous.mtu, tick_period=previous.tick_period,
                                reply_delay=previous.reply_delay)
        self._simulated = link
        return link

    @contextlib.asynccontextmanager
    async def _enter(self, link: LinkProto) -> AsyncIterator[LinkProto]:
        """The link entered; BLE connects take their adapter's turn (the connect only, not the session)."""
        async with contextlib.AsyncExitStack() as stack:
            turn = self.shared.connect_lock(self.dev.adapter) if self.transport_kind in BLE_KINDS else None
            async with turn or contextlib.nullcontext():
                started = time.monotonic()  # the connect itself, not the wait for the turn
                await stack.enter_async_context(link)
                self.connect_window = (started, time.monotonic())
            self.connects += 1
            yield link

    @contextlib.asynccontextmanager
    async def _open_session(self) -> AsyncIterator[Driver]:
        """A new link entered and its driver opened; meta published and the link `connected`."""
        async with self._enter(self._build_link()) as link:
            driver = self.entry.driver(link, DriverOptions(options=dict(self.dev.options)), log=self.log)
            if self.capture is not None:
                driver.on_chunk = self.capture.chunk
            try:
                async with asyncio.timeout(self.OPEN_TIMEOUT):
                    info = await driver.open()
                self.driver = driver
                self.publish_meta(info, protocol=self.entry.name, transport=link.kind, quantities=driver.quantities,
                                  switches=driver.writable_switches(), settings=driver.setting_specs(),
                                  setting_values=current_setting_values(driver))
                self._connected(link.rssi)
                yield driver
            finally:
                self.driver = None
                self.codec_errors_total += driver.codec_errors  # incl. the handshake's

    async def _timed_read(self, driver: Driver) -> Reading:
        """One read, in the collector-wide sampling turn when concurrent_sampling is off. The caller holds
        the device's own io lock (taken first, so a command never waits on another device)."""
        async with self.shared.sampling_turn():
            reading = await asyncio.wait_for(driver.read(), timeout=max(10.0, 3 * self.sample_period))
        self.publish_setting_values(current_setting_values(driver))  # re-read periodically by some drivers
        return reading

    async def _hold_link(self) -> None:
        async with self._open_session() as driver:
            self.averager = Averager()
            await self._alongside_background(driver, self._sample_forever(driver))

    async def _sample_forever(self, driver: Driver) -> None:
        while True:
            started = time.monotonic()
            async with self._io_lock:
                reading = await self._timed_read(driver)
            self.offer(reading, time.time())
            await asyncio.sleep(max(0.0, self.sample_period - (time.monotonic() - started)))

    async def _connect_per_sample(self) -> None:
        """keep_alive: false. The io lock spans the whole connect-read-disconnect, so a command waits for
        it and then makes its own connection instead of a second one at the same time."""
        while True:
            started = time.monotonic()
            async with self._io_lock:
                async with self._open_session() as driver:
                    reading = await self._alongside_background(driver, self._timed_read(driver))
            self.offer(reading, time.time())
            await asyncio.sleep(max(0.0, self.sample_period - (time.monotonic() - started)))

    async def _alongside_background(self, driver: Driver, work: Coroutine[Any, Any, T]) -> T:
        """`work`, with the driver's background() (if it has one) running next to it for exactly as long.
        Whichever fails first ends both, and its error is raised. background() runs until cancelled; if it
        returns by itself the link is gone (Victron's keep-alive stops on a dead link), so the session ends
        now instead of at the next read, which may be minutes away."""
        background = getattr(driver, "background", None)
        if background is None:
            return await work
        try:
            async with asyncio.TaskGroup() as tg:
                helper = tg.create_task(background(), name=f"background:{self.id}")
                main = tg.create_task(work, name=f"session:{self.id}")
                await asyncio.wait((helper, main), return_when=asyncio.FIRST_COMPLETED)
                if not main.done():
                    main.cancel()
                    raise LinkClosed(f"{self.entry.name}: the link is gone (the driver's background task ended)")
                helper.cancel()
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        return main.result()

    @property
    def codec_errors_seen(self) -> int:
        """Bad frames or bytes thrown away over every session: finished ones (handshakes included) plus the
        live driver's (or, on a JK-PB bus, the live bus codec's) count."""
        live = self.driver.codec_errors if self.driver is not None else self.codec_errors
        return self.codec_errors_total + live

    # -- JK-PB bus mode
    async def _bus_session(self, addresses: tuple[int, ...]) -> None:
        """Every pack on a JK-PB RS485 bus, each published as its own bms `<device id>_<slug(pack name)>`: the
        name is what the pack says it is (device info), so a pack keeps its id when its DIP address changes.
        The address-0 master never answers device info: it is `<device id>_master`. A pack that stays
        unnamed for PACK_NAME_WAIT s is published as `<device id>_addr<N>` (logged)."""
        from .protocols.jk.driver import JkPbBus, JkPbDriver

        options = {k: v for k, v in self.dev.options.items() if k in JkPbDriver.CODEC_OPTIONS}
        options.setdefault("cell_interval", self.sample_period)
        silence = max(self.BUS_SILENCE, 5 * float(options["cell_interval"]))
        self._pack_ids = {}
        unnamed_since: dict[int, float] = {}
        async with self._enter(self._build_link()) as link:
            bus = JkPbBus(link, addresses, **options)
            try:
                await self._read_bus(bus, link, silence, unnamed_since)
            finally:
                self.codec_errors_total += bus.codec.codec_errors
                self.codec_errors = 0

    async def _read_bus(self, bus: Any, link: LinkProto, silence: float, unnamed_since: dict[int, float]) -> None:
        from .protocols.jk.driver import JkPbDriver

        if self.capture is not None:
            bus.on_chunk = self.capture.chunk
        heard = False  # an open port is no success yet: a dead bus must still end up `failed`
        while True:
            try:
                async with asyncio.timeout(silence):
                    sample = await bus.next_sample()
            except TimeoutError:
                raise LinkTimeout(f"no pack heard on the JK-PB bus for {silence:.0f} s") from None
            self.codec_errors = bus.codec.codec_errors
            if not heard:
                heard = True
                self._connected(link.rssi)
            pack = self._pack_for(sample, unnamed_since, link.kind, JkPbDriver)
            if pack is not None:
                if pack.link_state is None or pack.link_state.state != "connected":
                    pack.publish_link("connected", rssi=link.rssi)
                sample_out = pack.offer(sample.reading, time.time())
                if sample_out is not None:
                    self.last_sample = sample_out
            self._mark_silent_packs(bus, silence)

    def _pack_for(self, sample: Any, unnamed_since: dict[int, float], transport: str,
                  driver: type[Driver]) -> BmsPublisher | None:
        address = sample.address
        bms = self._pack_ids.get(address)
        if bms is None:
            bms = self._pack_id(sample, unnamed_since)
            if bms is None:
                return None
            self._pack_ids[address] = bms
        pack = self.packs.get(bms)
        new = pack is None
        if pack is None:
            label = sample.device_name or ("master" if address == 0 else f"address {address}")
            pack = self.packs[bms] = BmsPublisher(bms, self.dev, self.cfg, self.topics, self.outbox, self.boot,
                                                  self.log.getChild(slug(label)))
            pack.dev = self.dev.model_copy(update={"alias": f"{self.dev.name} {label}", "id": bms})
        info = sample.info or DeviceInfo(manufacturer="JK BMS")
        info = dataclasses.replace(info, extra={**(info.extra or {}), "bus_address": str(address),
                                                "bus": self.id})
        pack.publish_meta(info, protocol=self.entry.name, transport=transport, quantities=driver.quantities,
                          name=pack.dev.name)
        if new:
            self.log.info("JK-PB pack %r at address %d published as %s", sample.device_name, address, bms)
            if self.shared.on_new_bms is not None:
                self.shared.on_new_bms()
        return pack

    def _pack_id(self, sample: Any, unnamed_since: dict[int, float]) -> str | None:
        address, name = sample.address, sample.device_name
        if name:
            bms = f"{self.id}_{slug(name)}"[:64]
            if bms in self._pack_ids.values():
                # Two packs with one name (factory defaults): the later one gets its address in the id too.
                self.log.warning("two JK-PB packs are named %r; name them apart in the JK app so their ids stay "
                                 "put when readdressed (using address %d for this one)", name, address)
                bms = f"{self.id}_{slug(name)}"[:58] + f"_addr{address}"
            return bms
        if address == 0:
            return f"{self.id}_master"[:64]
        first = unnamed_since.setdefault(address, time.monotonic())
        if time.monotonic() - first < self.PACK_NAME_WAIT:
            return None  # its device info is asked for in the bus's idle gaps
        self.log.warning("JK-PB pack at address %d never said its name; publishing it as %s_addr%d (its id will "
                         "follow its address)", address, self.id, address)
        return f"{self.id}_addr{address}"[:64]

    def _mark_silent_packs(self, bus: Any, silence: float) -> None:
        """A pack not heard for `silence` s (unplugged, readdressed away) shows `disconnected`."""
        now = asyncio.get_running_loop().time()
        for address, bms in self._pack_ids.items():
            view = bus.codec.packs.get(address)
            pack = self.packs[bms]
            if view is not None and now - view.cell_at > silence and pack.link_state is not None \
                    and pack.link_state.state == "connected":
                pack.failures = 1
                pack.publish_link("disconnected", f"not heard on the bus for {now - view.cell_at:.0f} s")

    # -- capture
    def _open_capture(self) -> DeviceCapture | None:
        if not self.dev.capture:
            return None
        directory = self.cfg.collector.capture_dir
        if directory is None:
            self.log.warning("capture: true, but collector.capture_dir is not set; not capturing")
            return None
        if getattr(self.entry.driver, "owns_transport", False):
            self.log.warning("capture: %s delivers decoded values, not bytes; nothing to capture", self.entry.name)
            return None
        from .diag import Capture

        c = self.cfg.collector
        capture = Capture(directory, self.id, meta={"type": self.dev.type, "protocol": self.entry.name,
                                                    "address": self.dev.address},
                          max_bytes=c.capture_max_bytes, backups=c.capture_keep)
        return DeviceCapture(capture, self.log)

    # -- commands
    async def execute(self, cmd: Command) -> CommandResult:
        """At most once per id; never after expiry; validated against what the device declares."""
        if cmd.id in self._commands_seen:
            previous = self._commands_seen[cmd.id]
            return previous or self._result(cmd, "rejected", "duplicate command id (already executing)")
        self._commands_seen[cmd.id] = None
        while len(self._commands_seen) > self.MAX_REMEMBERED_COMMANDS:
            self._commands_seen.popitem(last=False)
        result = await self._execute(cmd)
        self._commands_seen[cmd.id] = result
        return result

    def _result(self, cmd: Command, status: str, reason: str | None = None,
                readback: bool | None = None) -> CommandResult:
        return CommandResult(id=cmd.id, bms=self.id, status=status, ts=time.time(), reason=reason,  # type: ignore[arg-type]
                             readback=readback)

    def _reachable_between_samples(self) -> bool:
        """keep_alive: false and the last connect worked: a command connects for itself."""
        return (not self.dev.keep_alive and self.addresses is None and self.link_state is not None
                and self.link_state.state == "connected")

    async def _execute(self, cmd: Command) -> CommandResult:
        if time.time() > cmd.expires:
            return self._result(cmd, "rejected", f"expired {time.time() - cmd.expires:.1f} s ago")
        if self.addresses is not None:
            return self._result(cmd, "rejected", "a JK-PB bus is read-only (no switches)")
        if self.driver is None and not self._reachable_between_samples():
            return self._result(cmd, "failed", "device not connected")
        try:
            async with self._io_lock:
                if time.time() > cmd.expires:  # it may have waited for the lock
                    return self._result(cmd, "rejected", "expired while waiting for the device")
                if self.driver is not None:
                    return await self._switch(self.driver, cmd)
                if self.dev.keep_alive:
                    return self._result(cmd, "failed", "device not connected")
                async with self._open_session() as driver:
                    return await self._switch(driver, cmd)
        except UsageError as exc:
            return self._result(cmd, "rejected", str(exc))
        except (LinkError, CodecError, TimeoutError, OSError) as exc:
            return self._result(cmd, "failed", describe(exc))

    async def _switch(self, driver: Driver, cmd: Command) -> CommandResult:
        """Set, read back, compare. The caller holds the io lock."""
        if cmd.action == "set_setting":
            return await self._setting(driver, cmd)
        allowed = driver.writable_switches()
        if cmd.switch not in allowed:
            return self._result(cmd, "rejected",
                                f"switch {cmd.switch!r} is not writable on this device; writable: {list(allowed)}")
        async with asyncio.timeout(20):
            await driver.set_switch(cmd.switch, cmd.value)
            reading = await driver.read()
        readback = (reading.get("switches") or {}).get(cmd.switch)
        if readback is None:
            return self._result(cmd, "ok", "written; the device does not report this switch back")
        if readback != cmd.value:
            return self._result(cmd, "failed", f"device still reports {cmd.switch}={readback}", readback)
        return self._result(cmd, "ok", readback=readback)

    async def _setting(self, driver: Driver, cmd: Command) -> CommandResult:
        """A BMS setting (e.g. JK cell_ovp): only one the device declares; the driver writes it and confirms
        it by reading the settings back (WriteNotConfirmed, a CodecError, answers `failed`)."""
        assert cmd.setting is not None and cmd.number is not None
        allowed = driver.writable_settings()
        if cmd.setting not in allowed:
            return self._result(cmd, "rejected", f"setting {cmd.setting!r} is not writable on this device; "
                                f"writable: {list(allowed)}")
        try:
            async with asyncio.timeout(20):
                await driver.write_setting(cmd.setting, cmd.number)
        finally:  # what the BMS now holds (also after a write it did not confirm), before the result
            self.publish_setting_values(current_setting_values(driver))
        return self._result(cmd, "ok", f"{cmd.setting}={cmd.number:g} written and read back")


# --- the service ---------------------------------------------------------------------------------

class Collector:
    def __init__(self, cfg: Config) -> None:
        assert cfg.mqtt is not None
        self.cfg = cfg
        self.id = cfg.collector.id
        self.topics = Topics(cfg.topic_root, cfg.site)
        self.outbox = Outbox.with_spool(cfg.collector.spool_dir, cfg.collector.spool_max_bytes)
        self.boot = uuid.uuid4().hex[:12]
        self.started = time.time()
        self.coordination = Coordination(cfg)  # proxies, connect and sampling turns, adapter power cycles
        self.coordination.on_new_bms = self._announce
        self.runners = {d.id: DeviceRunner(d, cfg, self.topics, self.outbox, self.boot, self.coordination)
                        for d in cfg.devices}
        self.inbox = Inbox(self.topics, "collector")
        self._commands: asyncio.Queue[tuple[str, Command]] = asyncio.Queue(1000)
        self.health = Health(self)  # /healthz /status /metrics and the systemd watchdog read this

    def birth(self) -> Birth:
        return Birth(collector=self.id, version=__version__, boot=self.boot, started=self.started,
                     devices=[d for r in self.runners.values() for d in r.birth_devices()])

    def _announce(self) -> None:
        """A runner began publishing a bms id the last birth did not list (a JK-PB pack heard the first time)."""
        self.outbox.put(self.topics.collector_birth(self.id), self.birth().to_json(), retain=True)

    def connect(self) -> Bus:
        status = self.topics.collector_status(self.id)
        return Bus(self.cfg.mqtt, client_id=f"bmsbus-collector-{self.cfg.site}-{self.id}",  # type: ignore[arg-type]
                   will=(status, OFFLINE), persistent=True)

    async def on_bus(self, bus: Bus) -> None:
        status = self.topics.collector_status(self.id)
        await bus.publish(status, ONLINE, retain=True)
        self.outbox.set_connected(True)
        try:
            await bus.publish(self.topics.collector_birth(self.id), self.birth(), retain=True)
            self.outbox.resend_retained()
            for bms in self.runners:
                await bus.subscribe(self.topics.bms_cmd(bms))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish_forever(bus))
                tg.create_task(self._listen(bus))
        finally:
            self.outbox.set_connected(False)  # samples wait on disk (if spooling) until the next connect
            # A clean stop says offline itself: the broker sends the will only on an unclean one.
            try:
                async with asyncio.timeout(5):
                    await bus.publish(status, OFFLINE, retain=True)
            except Exception:  # noqa: BLE001 - best effort on the way out, the will covers the rest
                pass

    async def _publish_forever(self, bus: Bus) -> None:
        while True:
            item = await self.outbox.next()
            await bus.publish(item.topic, item.payload, retain=item.retain)
            self.outbox.done(item)

    async def _listen(self, bus: Bus) -> None:
        async for msg in bus.messages():
            decoded = self.inbox.decode(msg)
            if decoded is None:
                continue
            ref, cmd = decoded
            if ref.kind == "cmd" and isinstance(cmd, Command) and ref.entity in self.runners:
                if msg.retain:
                    # A retained command is a stale one by definition; never act on it.
                    self.inbox.skip("cmd", msg.topic, "retained command ignored")
                    continue
                try:
                    self._commands.put_nowait((ref.entity, cmd))
                except asyncio.QueueFull:
                    self.inbox.skip("cmd", msg.topic, "command queue full")

    async def _run_commands(self) -> None:
        while True:
            bms, cmd = await self._commands.get()
            result = await self.runners[bms].execute(cmd)
            self.outbox.put(self.topics.bms_cmd_result(bms), result.to_json())
            log.info("command %s on %s: %s %s", cmd.id, bms, result.status, result.reason or "")

    async def run(self) -> None:
        log.info("collector %s (boot %s) with %d devices", self.id, self.boot, len(self.runners))
        uses_proxies = any(r.transport == "esphome" for r in self.runners.values())
        try:
            async with self.coordination.hold_proxies(uses_proxies), asyncio.TaskGroup() as tg:
                for runner in self.runners.values():
                    tg.create_task(runner.run(), name=f"device:{runner.id}")
                tg.create_task(self._run_commands(), name="commands")
                tg.create_task(run_connected("collector", self.connect, self.health.track_bus(self.on_bus)),
                               name="bus")
                if self.cfg.collector.http is not None:
                    tg.create_task(self.health.serve(self.cfg.collector.http), name="http")
                tg.create_task(run_watchdog(self.health), name="systemd")
        finally:
            self.outbox.close()  # unsent samples to the spool, cursor saved: the next run sends them


async def run(cfg: Config) -> None:
    await Collector(cfg).run()


def check(cfg: Config) -> list[str]:
    problems = []
    for i, dev in enumerate(cfg.devices):
        name = dev.protocol if dev.type == SIMULATED else dev.type
        field = f"devices[{i}].protocol" if dev.type == SIMULATED else f"devices[{i}].type"
        if dev.type == SIMULATED and name is None:
            continue
        if name not in protocols.REGISTRY:
            allowed = sorted(protocols.REGISTRY) + ([] if dev.type == SIMULATED else [SIMULATED])
            problems.append(f"{field}: unknown BMS type {name!r}; allowed: {', '.join(allowed)}")
        elif dev.type == SIMULATED and protocols.REGISTRY[name].emulator is None:
            problems.append(f"{field}: {name!r} has no emulator, so it cannot be simulated")
        elif dev.type != SIMULATED and not dev.address:
            problems.append(f"devices[{i}].address: a {name} device needs an address (BLE MAC or name, or a "
                            "serial port path)")
        else:
            problems += _device_problems(cfg, i, dev, protocols.REGISTRY[name])  # type: ignore[index]
    problems += _proxy_problems(cfg)
    return problems


def _device_problems(cfg: Config, i: int, dev: DeviceConfig, entry: ProtocolEntry) -> list[str]:
    """Transport, capture and bus-mode problems of a device whose type is known."""
    where = f"devices[{i}]"
    problems = []
    if dev.type != SIMULATED:
        from .links.factory import config_problems

        problems += [f"{where}.{field}: {message}"
                     for field, message in config_problems(dev, entry, cfg.collector.esphome_proxies)]
    if dev.capture and cfg.collector.capture_dir is None:
        problems.append(f"{where}.capture: needs collector.capture_dir (the folder the capture files go to)")
    try:
        bus_addresses(dev, entry)
    except ValueError as exc:
        problems.append(f"{where}.options.addresses: {exc}")
    return problems


def _proxy_problems(cfg: Config) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for j, proxy in enumerate(cfg.collector.esphome_proxies):
        label = proxy.name or f"{proxy.host}:{proxy.port}"
        if label in seen:
            problems.append(f"collector.esphome_proxies[{j}].name: {label!r} is already used by "
                            f"esphome_proxies[{seen[label]}]; give each proxy its own name")
        seen.setdefault(label, j)
    return problems


SERVICE = ServiceSpec(name="collector", help="read BMSes and publish their samples", run=run, check=check)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_service_command(sub, SERVICE)
