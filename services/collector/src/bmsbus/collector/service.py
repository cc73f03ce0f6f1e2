"""The collector service: one supervised task per BMS, one outbox, one bus connection.

Device tasks never wait for the broker: they read their BMS on their own schedule and put messages
in the outbox. The publisher drains the outbox while the broker is reachable; retained state (birth,
meta, link) is re-published on every reconnect. A slow or dead BMS only delays itself.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bmsbus.shared import __version__
from bmsbus.shared.bus import Backoff, Bus, Inbox, run_connected
from bmsbus.shared.config import Config, DeviceConfig
from bmsbus.shared.models import Birth, BirthDevice, Command, CommandResult, Link, Meta, Sample, SwitchSpec
from bmsbus.shared.quantities import SAMPLE_KEYS
from bmsbus.shared.runner import ServiceSpec, add_service_command
from bmsbus.shared.topics import OFFLINE, ONLINE, Topics

from . import protocols
from .codec import CodecError, Reading, UsageError
from .driver import Driver, DriverOptions, ProtocolEntry
from .links.base import Link as LinkProto
from .links.base import LinkError

log = logging.getLogger("bmsbus.collector")

SIMULATED = "simulated"


# --- outbox --------------------------------------------------------------------------------------

@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False


class Outbox:
    """Messages waiting for the broker.

    Retained topics (birth, meta, link) keep only their latest payload and are marked dirty; all of them
    are marked dirty again after a reconnect, so the broker always ends up with the newest state and
    nothing stale is replayed over it. Samples queue in order, bounded: when full the oldest go, counted.
    """

    def __init__(self, max_pending: int = 100_000) -> None:
        self.retained: dict[str, bytes] = {}
        self.dirty: dict[str, None] = {}  # insertion-ordered set of retained topics to (re)send
        self.pending: deque[Outgoing] = deque()
        self.max_pending = max_pending
        self.dropped = 0
        self._ready = asyncio.Event()

    def put(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if retain:
            self.retained[topic] = payload
            self.dirty.pop(topic, None)
            self.dirty[topic] = None
        else:
            if len(self.pending) >= self.max_pending:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append(Outgoing(topic, payload))
        self._ready.set()

    def resend_retained(self) -> None:
        """After a reconnect: the broker may have lost or never seen our retained state."""
        for topic in self.retained:
            self.dirty[topic] = None
        self._ready.set()

    async def next(self) -> Outgoing:
        while True:
            if self.dirty:
                topic = next(iter(self.dirty))
                return Outgoing(topic, self.retained[topic], retain=True)
            if self.pending:
                return self.pending[0]
            self._ready.clear()
            await self._ready.wait()

    def done(self, item: Outgoing) -> None:
        """`item` was published; only now does it leave the outbox (nothing lost on a broken publish)."""
        if item.retain:
            if self.retained.get(item.topic) is item.payload:
                self.dirty.pop(item.topic, None)
        elif self.pending and self.pending[0] is item:
            self.pending.popleft()


# --- device supervision --------------------------------------------------------------------------

def resolve(dev: DeviceConfig) -> ProtocolEntry:
    name = (dev.protocol or "jk_32s") if dev.type == SIMULATED else dev.type
    return protocols.get(name)


def open_link(dev: DeviceConfig, entry: ProtocolEntry) -> LinkProto:
    if dev.type == SIMULATED:
        from .simulated import simulated_link

        return simulated_link(dev, entry)
    if getattr(entry.driver, "owns_transport", False):
        # aiobmsble plugins drive their own BleakClient: the driver makes its own link.
        options = dict(dev.options)
        if dev.pin is not None:
            options.setdefault("pin", dev.pin.get_secret_value())
        return entry.driver.make_link(dev.address, DriverOptions(options=options))  # type: ignore[attr-defined]
    from .links.factory import open_link as open_real_link

    return open_real_link(dev, entry)


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


class DeviceRunner:
    MAX_REMEMBERED_COMMANDS = 256

    def __init__(self, dev: DeviceConfig, cfg: Config, topics: Topics, outbox: Outbox, boot: str) -> None:
        self.dev = dev
        self.id: str = dev.id  # type: ignore[assignment]
        self.cfg = cfg
        self.topics = topics
        self.outbox = outbox
        self.boot = boot
        self.entry = resolve(dev)
        self.sample_period = dev.sample_period or cfg.collector.sample_period
        self.publish_period = dev.publish_period or cfg.collector.publish_period or self.sample_period
        self.log = logging.getLogger(f"bmsbus.collector.{self.id}")
        if dev.debug:
            self.log.setLevel(logging.DEBUG)
        self.seq = 0
        self.failures = 0
        self.driver: Driver | None = None
        self.last_sample: Sample | None = None
        self.link_state: Link | None = None
        self.bad_values = 0
        self._io_lock = asyncio.Lock()  # reads and commands take turns on the link
        self._commands_seen: OrderedDict[str, CommandResult | None] = OrderedDict()

    # -- publishing helpers
    def _publish_link(self, state: str, error: str | None = None, rssi: int | None = None) -> None:
        now = time.time()
        since = self.link_state.since if self.link_state and self.link_state.state == state else now
        self.link_state = Link(bms=self.id, state=state, ok=state == "connected", ts=now, rssi=rssi,  # type: ignore[arg-type]
                               last_error=error, consecutive_failures=self.failures, since=since)
        self.outbox.put(self.topics.bms_link(self.id), self.link_state.to_json(), retain=True)

    def _publish_meta(self, driver: Driver, info: Any) -> None:
        meta = Meta(
            bms=self.id, collector=self.cfg.collector.id, name=self.dev.name, type=self.dev.type,
            protocol=self.entry.name, transport=driver.link.kind,
            manufacturer=info.manufacturer, model=info.model, hw_version=info.hw_version,
            sw_version=info.sw_version, serial=info.serial,
            quantities=sorted(driver.quantities & SAMPLE_KEYS),
            switches=[SwitchSpec(name=s) for s in driver.writable_switches()],
            extra={k: str(v) for k, v in (info.extra or {}).items()},
        )
        self.outbox.put(self.topics.bms_meta(self.id), meta.to_json(), retain=True)

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

    # -- the device loop
    async def run(self) -> None:
        backoff = Backoff(first=2.0, factor=1.8, cap=120.0)
        while True:
            try:
                await self._session()
            except (LinkError, CodecError, TimeoutError, OSError) as exc:
                self.failures += 1
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                delay = backoff.next()
                self._publish_link("failed" if self.failures >= 3 else "disconnected", error)
                (self.log.warning if self.failures <= 3 else self.log.debug)(
                    "%s; reconnecting in %.1f s (failure %d)", error, delay, self.failures)
                await asyncio.sleep(delay)
            else:
                return
            finally:
                self.driver = None

    async def _session(self) -> None:
        self._publish_link("connecting")
        link = open_link(self.dev, self.entry)
        async with link:
            driver = self.entry.driver(link, DriverOptions(options=dict(self.dev.options)), log=self.log)
            async with asyncio.timeout(30):
                info = await driver.open()
            self.driver = driver
            self._publish_meta(driver, info)
            self.failures = 0
            self._publish_link("connected", rssi=link.rssi)
            averager = Averager()
            next_publish = time.monotonic() + self.publish_period
            while True:
                started = time.monotonic()
                async with self._io_lock:
                    reading = await asyncio.wait_for(driver.read(), timeout=max(10.0, 3 * self.sample_period))
                ts = time.time()
                averager.add(reading)
                if time.monotonic() >= next_publish - 0.05 * self.sample_period:
                    next_publish += self.publish_period
                    sample = self.make_sample(averager.apply(reading), ts)
                    if sample is not None:
                        self.last_sample = sample
                        self.outbox.put(self.topics.bms_sample(self.id), sample.to_json())
                await asyncio.sleep(max(0.0, self.sample_period - (time.monotonic() - started)))

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

    async def _execute(self, cmd: Command) -> CommandResult:
        if time.time() > cmd.expires:
            return self._result(cmd, "rejected", f"expired {time.time() - cmd.expires:.1f} s ago")
        driver = self.driver
        if driver is None:
            return self._result(cmd, "failed", "device not connected")
        allowed = driver.writable_switches()
        if cmd.switch not in allowed:
            return self._result(cmd, "rejected",
                                f"switch {cmd.switch!r} is not writable on this device; writable: {list(allowed)}")
        try:
            async with self._io_lock:
                if time.time() > cmd.expires:  # it may have waited for the lock
                    return self._result(cmd, "rejected", "expired while waiting for the device")
                async with asyncio.timeout(20):
                    await driver.set_switch(cmd.switch, cmd.value)
                    reading = await driver.read()
        except UsageError as exc:
            return self._result(cmd, "rejected", str(exc))
        except (LinkError, CodecError, TimeoutError, OSError) as exc:
            return self._result(cmd, "failed", f"{type(exc).__name__}: {exc}")
        readback = (reading.get("switches") or {}).get(cmd.switch)
        if readback is None:
            return self._result(cmd, "ok", "written; the device does not report this switch back")
        if readback != cmd.value:
            return self._result(cmd, "failed", f"device still reports {cmd.switch}={readback}", readback)
        return self._result(cmd, "ok", readback=readback)


# --- the service ---------------------------------------------------------------------------------

class Collector:
    def __init__(self, cfg: Config) -> None:
        assert cfg.mqtt is not None
        self.cfg = cfg
        self.id = cfg.collector.id
        self.topics = Topics(cfg.topic_root, cfg.site)
        self.outbox = Outbox()
        self.boot = uuid.uuid4().hex[:12]
        self.started = time.time()
        self.runners = {d.id: DeviceRunner(d, cfg, self.topics, self.outbox, self.boot) for d in cfg.devices}
        self.inbox = Inbox(self.topics, "collector")
        self._commands: asyncio.Queue[tuple[str, Command]] = asyncio.Queue(1000)

    def birth(self) -> Birth:
        return Birth(collector=self.id, version=__version__, boot=self.boot, started=self.started,
                     devices=[BirthDevice(bms=r.id, type=r.dev.type, name=r.dev.name, address=r.dev.address)
                              for r in self.runners.values()])

    def connect(self) -> Bus:
        status = self.topics.collector_status(self.id)
        return Bus(self.cfg.mqtt, client_id=f"bmsbus-collector-{self.cfg.site}-{self.id}",  # type: ignore[arg-type]
                   will=(status, OFFLINE), persistent=True)

    async def on_bus(self, bus: Bus) -> None:
        status = self.topics.collector_status(self.id)
        await bus.publish(status, ONLINE, retain=True)
        try:
            await bus.publish(self.topics.collector_birth(self.id), self.birth(), retain=True)
            self.outbox.resend_retained()
            for bms in self.runners:
                await bus.subscribe(self.topics.bms_cmd(bms))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish_forever(bus))
                tg.create_task(self._listen(bus))
        finally:
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
        async with asyncio.TaskGroup() as tg:
            for runner in self.runners.values():
                tg.create_task(runner.run(), name=f"device:{runner.id}")
            tg.create_task(self._run_commands(), name="commands")
            tg.create_task(run_connected("collector", self.connect, self.on_bus), name="bus")


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
    return problems


SERVICE = ServiceSpec(name="collector", help="read BMSes and publish their samples", run=run, check=check)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_service_command(sub, SERVICE)
