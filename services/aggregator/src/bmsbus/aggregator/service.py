"""The aggregator service: samples in, battery states (meters, groups, charge control) out.

    bms/+/sample        -> Engine (pure) -> battery/<id>/state    retained, at most 1/publish_interval per id
                                         -> battery/<id>/control  retained
    battery/+/cmd       -> fan out to bms/<member>/cmd, results on battery/<id>/cmd/result

One persistent MQTT session (fixed client id, QoS 1) so samples published while the aggregator is away
are delivered when it is back. Every sample that changed state is journaled before the next one is
taken; a snapshot every `snapshot_interval` bounds the journal. A restart (even after kill -9) replays
snapshot + journal and continues the meters exactly. Bad input is counted, logged and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable

from bmsbus.shared.bus import Bus, Inbox, run_connected
from bmsbus.shared.config import Config
from bmsbus.shared.models import BadMessage, Sample, parse
from bmsbus.shared.runner import ServiceSpec, add_service_command
from bmsbus.shared.topics import Topics

from .engine import Engine
from .store import StateStore, encode_sample, encode_tick

log = logging.getLogger("bmsbus.aggregator")

PUBLISH_CONCURRENCY = 64


class Aggregator:
    def __init__(self, cfg: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.acfg = cfg.aggregator
        self.clock = clock
        self.topics = Topics(cfg.topic_root, cfg.site)
        self.inbox = Inbox(self.topics, "aggregator")
        self.engine = Engine(self.acfg, cfg.devices)
        self.store = StateStore(self.acfg.state_dir, fsync_journal=self.acfg.fsync_journal)
        self.errors = 0
        self.samples = 0

    # -- state
    def restore(self) -> None:
        snapshot, events = self.store.load()
        if snapshot is not None:
            self.engine.load(snapshot)
        replayed = 0
        for ev in events:
            try:
                if ev.kind == "S":
                    self.engine.on_sample(parse(Sample, ev.payload), ev.now)  # type: ignore[arg-type]
                else:
                    self.engine.tick(ev.now)
                replayed += 1
            except (BadMessage, ValueError) as exc:
                log.warning("skipped a journal entry that no longer applies: %s", exc)
        self.engine.effects.clear()  # they happened (or were lost) before the restart; never repeat them
        self.store.snapshot(self.engine.dump())
        log.info("state restored: %d packs, %d groups, %d journal entries replayed",
                 len(self.engine.packs), len(self.engine.groups), replayed)

    def save(self) -> None:
        self.store.snapshot(self.engine.dump())

    # -- inputs
    def handle(self, topic: str, payload: bytes, retain: bool) -> None:
        from bmsbus.shared.bus import Message

        decoded = self.inbox.decode(Message(topic, payload, retain))
        if decoded is None:
            return
        ref, model = decoded
        if ref.kind == "sample" and isinstance(model, Sample):
            if model.bms != ref.entity:
                self.inbox._skip("sample", topic, f"sample of {model.bms!r} on the topic of {ref.entity!r}")
                return
            now = self.clock()
            try:
                accepted = self.engine.on_sample(model, now)
            except Exception:  # noqa: BLE001 - one bad sample must not stop the aggregator
                self.errors += 1
                log.exception("sample %s/%s of %s could not be processed; skipped", model.boot, model.seq, model.bms)
                return
            self.samples += 1
            if accepted:
                self.store.append(encode_sample(now, payload if b"\n" not in payload else model.to_json()))

    def tick(self) -> None:
        now = self.clock()
        if self.engine.tick(now):
            self.store.append(encode_tick(now))

    # -- bus
    def connect(self) -> Bus:
        return Bus(self.cfg.mqtt, client_id=f"bmsbus-aggregator-{self.cfg.site}", persistent=True)  # type: ignore[arg-type]

    async def on_bus(self, bus: Bus) -> None:
        # Everything is re-published on a new connection: a broker that lost its retained store gets it back.
        self.engine.dirty.update(self.engine.ids())
        await bus.subscribe(self.topics.all_of("sample"))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._listen(bus), name="listen")
            tg.create_task(self._publish_forever(bus), name="publish")

    async def _listen(self, bus: Bus) -> None:
        async for msg in bus.messages():
            self.handle(msg.topic, msg.payload, msg.retain)

    async def _publish_forever(self, bus: Bus) -> None:
        while True:
            await self.publish_dirty(bus)
            await asyncio.sleep(self.acfg.publish_interval)

    async def publish_dirty(self, bus: Bus) -> None:
        now = self.clock()
        ids, self.engine.dirty = list(self.engine.dirty), set()
        try:
            for i in range(0, len(ids), PUBLISH_CONCURRENCY):
                chunk = ids[i:i + PUBLISH_CONCURRENCY]
                async with asyncio.TaskGroup() as tg:
                    for id in chunk:
                        tg.create_task(bus.publish(self.topics.battery_state(id), self.engine.state(id, now),
                                                   retain=True))
        except BaseException:
            self.engine.dirty.update(ids)  # not (all) published: try again on the next connection
            raise

    async def _housekeeping(self) -> None:
        next_save = time.monotonic() + self.acfg.snapshot_interval
        while True:
            await asyncio.sleep(min(1.0, self.acfg.publish_interval))
            self.tick()
            if time.monotonic() >= next_save:
                next_save += self.acfg.snapshot_interval
                self.save()

    async def run(self) -> None:
        self.restore()
        log.info("aggregator for site %s: %d groups, state in %s", self.cfg.site, len(self.engine.groups),
                 self.acfg.state_dir)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._housekeeping(), name="housekeeping")
                tg.create_task(run_connected("aggregator", self.connect, self.on_bus), name="bus")
        finally:
            # Also on cancellation: the snapshot makes the next start cheap (the journal would do too).
            self.save()
            self.store.close()


async def run(cfg: Config) -> None:
    await Aggregator(cfg).run()


def check(cfg: Config) -> list[str]:
    return []


SERVICE = ServiceSpec(name="aggregator", help="battery groups, energy meters, charge control, alarms and actions",
                      run=run, check=check)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_service_command(sub, SERVICE)
