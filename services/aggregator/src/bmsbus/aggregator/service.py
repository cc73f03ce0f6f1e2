"""The aggregator service: samples in, battery states (meters, groups, charge control) out.

    bms/+/sample          -> Engine (pure) -> battery/<id>/state     retained, at most 1/publish_interval per id
                                           -> battery/<id>/control   retained (CVL/CCL/DCL, mode, reasons)
                                           -> bms/<id>/cmd           switch commands (SoC window, actions)
    battery/+/cmd         -> fanned out to bms/<member>/cmd; results on battery/<id>/cmd/result
    bms/+/cmd/result      <- answers to both
    battery/+/settings/set -> runtime settings, persisted -> battery/<id>/settings (retained), cmd/result
    battery/+/meters/reset -> meters and computed cycles to 0, persisted -> cmd/result

One persistent MQTT session (fixed client id, QoS 1) so samples published while the aggregator is away
are delivered when it is back. Every sample that changed state is journaled as soon as it is processed;
a snapshot every `snapshot_interval` bounds the journal. A restart (even after kill -9) replays
snapshot + journal and continues the meters exactly. Bad input is counted, logged and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bmsbus.shared.bus import Bus, Inbox, Message, run_connected
from bmsbus.shared.config import Config
from bmsbus.shared.models import (BadMessage, BusModel, Command, CommandResult, MetersReset, Sample, SettingsRequest,
                                  parse)
from bmsbus.shared.runner import ServiceSpec, add_service_command
from bmsbus.shared.topics import ID_PATTERN, Topics

from .actions import Actions
from .battery_settings import GROUP_OVERRIDE_FIELDS, BatterySettings
from .engine import Effect, Engine, Verdict
from .socwindow import SocWindowSpec
from .store import METERS_RESET, SETTINGS_REQUEST, StateStore, encode_request, encode_sample, encode_tick

log = logging.getLogger("bmsbus.aggregator")

PUBLISH_CONCURRENCY = 8  # aiomqtt warns above 10 pending publishes
MAX_BUS_OUT = 10_000
CONTROL_HEARTBEAT = 60.0  # s between re-publishes of an unchanged battery/<id>/control


@dataclass(slots=True)
class GroupCommand:
    """A command to a group, fanned out: which member command ids are still open."""

    cmd: Command
    group: str
    open: dict[str, str]  # member command id -> member
    results: dict[str, CommandResult] = field(default_factory=dict)


class Aggregator:
    def __init__(self, cfg: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.acfg = cfg.aggregator
        self.clock = clock
        self.topics = Topics(cfg.topic_root, cfg.site)
        self.inbox = Inbox(self.topics, "aggregator")
        self.engine = Engine(self.acfg, cfg.devices)
        self.store = StateStore(self.acfg.state_dir, fsync_journal=self.acfg.fsync_journal)
        self.actions: Actions | None = None
        self.bus_out: deque[tuple[str, bytes, bool]] = deque(maxlen=MAX_BUS_OUT)  # waits for the broker
        self._bus_ready = asyncio.Event()
        self.group_commands: dict[str, GroupCommand] = {}  # member command id -> its group command
        self._seen_group_cmds: OrderedDict[str, None] = OrderedDict()
        self.errors = 0
        self.samples = 0
        self.disk_errors = 0
        self._published_control: dict[str, tuple[bytes, float]] = {}

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
                elif ev.kind == SETTINGS_REQUEST:
                    self.engine.request_settings(ev.battery, SettingsRequest.from_json(ev.payload), ev.now)
                elif ev.kind == METERS_RESET:
                    self.engine.reset_meters(ev.battery, MetersReset.from_json(ev.payload), ev.now)
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
        try:
            self.store.snapshot(self.engine.dump())
        except OSError as exc:
            # The journal still holds everything since the last good snapshot; keep running.
            self.disk_errors += 1
            log.error("state snapshot in %s failed: %s (the journal keeps growing until it works)",
                      self.acfg.state_dir, exc)

    def _journal(self, data: bytes) -> None:
        try:
            self.store.append(data)
        except OSError as exc:
            self.disk_errors += 1
            if self.disk_errors <= 5 or self.disk_errors % 1000 == 0:
                log.error("journal write in %s failed (#%d): %s; the state lives on in memory, a restart now "
                          "would lose it", self.acfg.state_dir, self.disk_errors, exc)

    # -- inputs
    def handle(self, msg: Message) -> None:
        decoded = self.inbox.decode(msg)
        if decoded is None:
            return
        ref, model = decoded
        if ref.kind == "sample" and isinstance(model, Sample):
            self._sample(msg, ref.entity, model)
        elif ref.kind == "battery_cmd" and isinstance(model, Command):
            self._group_command(msg, ref.entity, model)
        elif ref.kind == "cmd_result" and isinstance(model, CommandResult):
            self._command_result(model)
        elif ref.kind == "settings_set" and isinstance(model, SettingsRequest):
            self._request(msg, ref.entity, model)
        elif ref.kind == "meters_reset" and isinstance(model, MetersReset):
            self._request(msg, ref.entity, model)

    def _sample(self, msg: Message, entity: str, s: Sample) -> None:
        if s.bms != entity:
            self.inbox.skip("sample", msg.topic, f"sample of {s.bms!r} on the topic of {entity!r}")
            return
        now = self.clock()
        try:
            accepted = self.engine.on_sample(s, now)
        except Exception:  # noqa: BLE001 - one bad sample must not stop the aggregator
            self.errors += 1
            log.exception("sample %s/%s of %s could not be processed; skipped", s.boot, s.seq, s.bms)
            return
        self.samples += 1
        if accepted:
            self._journal(encode_sample(now, msg.payload if b"\n" not in msg.payload else s.to_json()))
        self._drain_effects()

    def _request(self, msg: Message, battery: str, req: SettingsRequest | MetersReset) -> None:
        """A settings change or a meters reset: applied (journaled, then snapshotted) or rejected; answered."""
        kind = "settings_set" if isinstance(req, SettingsRequest) else "meters_reset"
        if msg.retain:
            self.inbox.skip(kind, msg.topic, "retained request ignored (requests are never retained)")
            return
        if not ID_PATTERN.match(battery):
            self.inbox.skip(kind, msg.topic, f"{battery!r} is not a battery id")
            return
        now = self.clock()
        try:
            if isinstance(req, SettingsRequest):
                verdict = self.engine.request_settings(battery, req, now)
            else:
                verdict = self.engine.reset_meters(battery, req, now)
        except Exception:  # noqa: BLE001 - one bad request must not stop the aggregator
            self.errors += 1
            log.exception("%s %s on %s could not be processed", kind, req.id, battery)
            verdict = Verdict("failed", "internal error (logged by the aggregator)")
        if verdict.ok:
            self._journal(encode_request(SETTINGS_REQUEST if kind == "settings_set" else METERS_RESET, now, battery,
                                         req.to_json()))
            self.save()  # on disk, atomically, before the answer goes out
        what = f"settings {req.settings}" if isinstance(req, SettingsRequest) else "meters reset"
        log.info("%s %s of %s (%s): %s%s", what, req.id, battery, req.origin or "no origin", verdict.status,
                 f" ({verdict.reason})" if verdict.reason else "")
        self._result(battery, CommandResult(id=req.id, bms=battery, status=verdict.status,  # type: ignore[arg-type]
                                            ts=now, reason=verdict.reason))
        self._drain_effects()

    def tick(self) -> None:
        now = self.clock()
        if self.engine.tick(now):
            self._journal(encode_tick(now))
        self._drain_effects()
        self._expire_group_commands(now)

    # -- effects
    def _drain_effects(self) -> None:
        effects = self.engine.effects
        while effects:
            self.perform(effects.popleft())

    def perform(self, e: Effect) -> None:
        now = self.clock()
        if e.kind == "command":
            cmd = Command(id=f"agg-{uuid.uuid4().hex[:16]}", switch=e.data["switch"], value=e.data["value"],
                          issued=now, expires=now + self.engine.cc_of(e.target).command_ttl,
                          origin=f"aggregator: {e.data['origin']}"[:200])
            log.info("command to %s: %s=%s (%s)", e.target, cmd.switch, cmd.value, e.data["origin"])
            self._send(self.topics.bms_cmd(e.target), cmd.to_json())
        elif e.kind == "publish":
            self._send(e.target, e.data["payload"].encode(), e.data.get("retain", False))
        elif e.kind == "webhook" and self.actions is not None:
            self.actions.webhook(e.target, e.data)
        elif e.kind == "script" and self.actions is not None:
            self.actions.scripts(e.target, e.data["env"])

    def _send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if len(self.bus_out) == self.bus_out.maxlen:
            log.warning("outgoing queue full; dropped the oldest message")
        self.bus_out.append((topic, payload, retain))
        self._bus_ready.set()

    # -- group commands
    def _group_command(self, msg: Message, gid: str, cmd: Command) -> None:
        now = self.clock()
        group = self.engine.groups.get(gid)
        if group is None:
            return  # battery/<pack>/cmd is not ours (the collector listens on bms/<pack>/cmd)
        if msg.retain:
            self.inbox.skip("battery_cmd", msg.topic, "retained command ignored")
            return
        if cmd.id in self._seen_group_cmds:
            self._result(gid, CommandResult(id=cmd.id, bms=gid, status="rejected", ts=now,
                                            reason="duplicate command id"))
            return
        self._seen_group_cmds[cmd.id] = None
        while len(self._seen_group_cmds) > 256:
            self._seen_group_cmds.popitem(last=False)
        if now > cmd.expires:
            self._result(gid, CommandResult(id=cmd.id, bms=gid, status="rejected", ts=now,
                                            reason=f"expired {now - cmd.expires:.1f} s ago"))
            return
        gc = GroupCommand(cmd, gid, {})
        for member in group.members:
            mid = f"{gid[:20]}-{uuid.uuid4().hex[:20]}"
            gc.open[mid] = member
            self.group_commands[mid] = gc
            sub = Command(id=mid, action=cmd.action, switch=cmd.switch, value=cmd.value, setting=cmd.setting,
                          number=cmd.number, issued=now,
                          expires=cmd.expires, origin=f"group {gid}: {cmd.origin or cmd.id}"[:200])
            self._send(self.topics.bms_cmd(member), sub.to_json())
        log.info("group command %s on %s: %s to %s", cmd.id, gid, cmd.target, group.members)

    def _command_result(self, r: CommandResult) -> None:
        gc = self.group_commands.pop(r.id, None)
        if gc is None:
            if r.id.startswith("agg-") and r.status != "ok":
                log.warning("command %s on %s: %s (%s)", r.id, r.bms, r.status, r.reason)
            return
        member = gc.open.pop(r.id)
        per_member = CommandResult(id=gc.cmd.id, bms=member, status=r.status, ts=r.ts, reason=r.reason,
                                   readback=r.readback)
        gc.results[member] = per_member
        self._result(gc.group, per_member)
        if not gc.open:
            self._finish(gc)

    def _expire_group_commands(self, now: float) -> None:
        # Members get until expiry plus a little for their answer to travel back.
        for mid, gc in list(self.group_commands.items()):
            if now > gc.cmd.expires + 5.0:
                member = gc.open.pop(mid, None)
                del self.group_commands[mid]
                if member is not None:
                    failed = CommandResult(id=gc.cmd.id, bms=member, status="failed", ts=now,
                                           reason="no answer from the member before expiry")
                    gc.results[member] = failed
                    self._result(gc.group, failed)
                if not gc.open:
                    self._finish(gc)

    def _finish(self, gc: GroupCommand) -> None:
        bad = {m: r for m, r in gc.results.items() if r.status != "ok"}
        reason = "; ".join(f"{m}: {r.status} ({r.reason})" if r.reason else f"{m}: {r.status}" for m, r in bad.items())
        self._result(gc.group, CommandResult(id=gc.cmd.id, bms=gc.group, status="failed" if bad else "ok",
                                             ts=self.clock(), reason=reason or None))

    def _result(self, gid: str, r: CommandResult) -> None:
        self._send(self.topics.battery_cmd_result(gid), r.to_json())

    # -- bus
    def connect(self) -> Bus:
        return Bus(self.cfg.mqtt, client_id=f"bmsbus-aggregator-{self.cfg.site}", persistent=True)  # type: ignore[arg-type]

    async def on_bus(self, bus: Bus) -> None:
        # Everything is re-published on a new connection: a broker that lost its retained store gets it back.
        self.engine.dirty.update(self.engine.ids())
        self._published_control.clear()
        self.engine.control_dirty.update(self.engine.controls.keys() | self.engine.groups.keys())
        self.engine.settings_dirty.update(self.engine.settings_ids())
        await bus.subscribe(self.topics.all_of("sample"), self.topics.all_of("battery_cmd"),
                            self.topics.all_of("cmd_result"), self.topics.all_of("settings_set"),
                            self.topics.all_of("meters_reset"))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._listen(bus), name="listen")
            tg.create_task(self._publish_forever(bus), name="publish")
            tg.create_task(self._send_forever(bus), name="send")

    async def _listen(self, bus: Bus) -> None:
        async for msg in bus.messages():
            self.handle(msg)

    async def _send_forever(self, bus: Bus) -> None:
        while True:
            while not self.bus_out:
                self._bus_ready.clear()
                await self._bus_ready.wait()
            topic, payload, retain = self.bus_out[0]
            await bus.publish(topic, payload, retain=retain)
            self.bus_out.popleft()  # only once sent: a broken connection loses nothing queued

    async def _publish_forever(self, bus: Bus) -> None:
        while True:
            await self.publish_dirty(bus)
            await asyncio.sleep(self.acfg.publish_interval)

    async def publish_dirty(self, bus: Bus) -> None:
        now = self.clock()
        states, self.engine.dirty = list(self.engine.dirty), set()
        controls, self.engine.control_dirty = list(self.engine.control_dirty), set()
        settings, self.engine.settings_dirty = list(self.engine.settings_dirty), set()
        jobs: list[tuple[str, BusModel]] = []
        for id in settings:
            if (model := self._build("settings", id, self.engine.settings_state, now)) is not None:
                jobs.append((self.topics.battery_settings(id), model))
        for id in states:
            if (model := self._build("state", id, self.engine.state, now)) is not None:
                jobs.append((self.topics.battery_state(id), model))
        for id in controls:
            c = self._build("control", id, self.engine.control, now)
            if c is None:
                continue
            # Limits change rarely: publish a change at once, an unchanged control once a minute.
            body = c.model_dump_json(exclude={"ts"}).encode()
            last = self._published_control.get(id)
            if last is not None and last[0] == body and now - last[1] < CONTROL_HEARTBEAT:
                continue
            self._published_control[id] = (body, now)
            jobs.append((self.topics.battery_control(id), c))
        try:
            for i in range(0, len(jobs), PUBLISH_CONCURRENCY):
                async with asyncio.TaskGroup() as tg:
                    for topic, model in jobs[i:i + PUBLISH_CONCURRENCY]:
                        tg.create_task(bus.publish(topic, model, retain=True))
        except BaseException:
            # Not (all) published: again on the next connection.
            self.engine.dirty.update(states)
            self.engine.control_dirty.update(controls)
            self.engine.settings_dirty.update(settings)
            self._published_control.clear()
            raise

    def _build(self, what: str, id: str, build: Callable[[str, float], BusModel | None],
               now: float) -> BusModel | None:
        """One battery's message, or None; a battery whose message cannot be built must not stop the others."""
        try:
            return build(id, now)
        except Exception:  # noqa: BLE001
            self.errors += 1
            log.exception("%s of %s could not be built; skipped", what, id)
            return None

    async def _housekeeping(self) -> None:
        next_save = time.monotonic() + self.acfg.snapshot_interval
        while True:
            await asyncio.sleep(min(1.0, self.acfg.publish_interval))
            self.tick()
            if time.monotonic() >= next_save:
                next_save = time.monotonic() + self.acfg.snapshot_interval
                self.save()

    async def run(self) -> None:
        self.restore()
        log.info("aggregator for site %s: %d groups, state in %s", self.cfg.site, len(self.engine.groups),
                 self.acfg.state_dir)
        try:
            async with Actions(scripts_dir=self.acfg.scripts_dir, script_timeout=self.acfg.script_timeout) as actions:
                self.actions = actions
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._housekeeping(), name="housekeeping")
                    tg.create_task(run_connected("aggregator", self.connect, self.on_bus), name="bus")
        finally:
            # Also on cancellation: the snapshot makes the next start cheap (the journal alone would do too).
            self.save()
            self.store.close()


async def run(cfg: Config) -> None:
    await Aggregator(cfg).run()


def check(cfg: Config) -> list[str]:
    """Config problems only the aggregator knows about, as `field: message`."""
    problems = []
    for i, d in enumerate(cfg.devices):
        if d.algorithm:
            try:
                SocWindowSpec.parse(d.algorithm)
            except ValueError as exc:
                problems.append(f"devices[{i}].algorithm: {exc}")
    known = {d.id for d in cfg.devices}
    for i, g in enumerate(cfg.aggregator.groups):
        known.add(g.id)
        if g.algorithm:
            try:
                SocWindowSpec.parse(g.algorithm)
            except ValueError as exc:
                problems.append(f"aggregator.groups[{i}].algorithm: {exc}")
    for i, rule in enumerate(cfg.aggregator.cell_states):
        unknown = [b for b in rule.batteries or [] if b not in known]
        if unknown:
            problems.append(f"aggregator.cell_states[{i}].batteries: unknown ids {unknown}; known: {sorted(known)}")
    sd = cfg.aggregator.scripts_dir
    if sd is not None and not Path(sd).is_dir():
        problems.append(f"aggregator.scripts_dir: {sd} is not a directory")
    cc = cfg.aggregator.charge_control
    if not cc.min_cell_voltage < cc.float_cell_voltage <= cc.max_cell_voltage:
        problems.append("aggregator.charge_control: need min_cell_voltage < float_cell_voltage <= max_cell_voltage")
    if not cc.safe_cell_min < cc.safe_cell_max:
        problems.append("aggregator.charge_control: need safe_cell_min < safe_cell_max")
    problems += _check_overrides(cfg)
    return problems


def _check_overrides(cfg: Config) -> list[str]:
    """charge_control_overrides: known ids, only what a group takes, and a consistent result per battery."""
    problems = []
    groups = {g.id for g in cfg.aggregator.groups}
    devices = {d.id for d in cfg.devices if d.id}
    overrides = {id: o.model_dump(exclude_unset=True) for id, o in cfg.aggregator.charge_control_overrides.items()}
    settings = BatterySettings(cfg.aggregator.charge_control, overrides, {}, groups)
    for id, fields in overrides.items():
        where = f"aggregator.charge_control_overrides.{id}"
        if id not in devices and id not in groups:
            problems.append(f"{where}: unknown id {id!r}; allowed: devices {sorted(devices)}, groups {sorted(groups)}")
            continue
        if id in groups and (extra := sorted(set(fields) - GROUP_OVERRIDE_FIELDS)):
            problems.append(f"{where}: a group takes only {sorted(GROUP_OVERRIDE_FIELDS)} (its charge voltage and "
                            f"curves follow its members); got {extra}")
            continue
        try:
            resolved = settings.of(id).cc
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not resolved.safe_cell_min < resolved.safe_cell_max:
            problems.append(f"{where}: need safe_cell_min < safe_cell_max")
    return problems


SERVICE = ServiceSpec(name="aggregator", help="battery groups, energy meters, charge control, alarms and actions",
                      run=run, check=check)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_service_command(sub, SERVICE)
