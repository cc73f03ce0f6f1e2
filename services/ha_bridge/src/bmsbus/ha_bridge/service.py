"""The HA bridge service: device-based discovery, HA-facing state topics and HA controls.

Listens to the bus (meta, birth, link, sample, cmd/result, battery state, control, settings) and to HA (its
status topic and the command topics under `<root>/ha/`), and publishes:
- retained discovery `<prefix>/device/bmsbus_<site>_<id>/config` per pack (BMS) and per group;
- the flat HA state topics `<root>/ha/<id>/{sample,state,control,settings,diag,bms_settings}` (not retained;
  re-sent after HA's birth);
- Commands on `bms/<id>/cmd` (`battery/<id>/cmd` for a group; a BMS setting: `set_setting`), MetersReset on
  `battery/<id>/meters/reset` and SettingsRequests on `battery/<id>/settings/set`; the CommandResult of each
  (for the last two on `battery/<id>/cmd/result`) is shown in the device's "Last command" sensor, as is a
  command the bridge refuses;
- its own status `<root>/ha/status` (retained online/offline, last will), part of every entity's availability.

When a device leaves (its discovery is cleared with an empty retained payload):
- a pack: its retained `bms/<id>/meta` is cleared (empty payload), or the retained birth of the collector that
  published its meta no longer lists it (the device was removed from that collector's config);
- a group: its retained `battery/<id>/state` is cleared (the aggregator no longer has the group);
- at start (`remove_stale`), after `settle_time`: any retained discovery of this site's bmsbus devices that
  matches none of the above (e.g. left behind while the bridge was down).
A collector or link going down is NOT leaving: the entities become unavailable instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from bmsbus.shared.bus import Bus, Inbox, Message, run_connected
from bmsbus.shared.config import Config
from bmsbus.shared.models import (BatteryState, Birth, BmsSettingSpec, CommandResult, Control, Link, Meta, Sample,
                                  SettingsState, dumps)
from bmsbus.shared.runner import ServiceSpec, add_service_command
from bmsbus.shared.settings import SETTING_SPECS
from bmsbus.shared.topics import ID_PATTERN, OFFLINE, ONLINE, Topics

from . import commands as cmds
from .discovery import (HaTopics, Origin, device_config, group_availability, group_device_info, pack_availability,
                        pack_device_info, without)
from .entities import (BMS_SETTINGS, CONTROL, DIAG, SAMPLE, SETTINGS, STATE, Entity, GroupFacts, PackFacts,
                       bms_setting_key, group_entities, pack_entities)
from .state import (bms_setting_values, control_values, diag_values, group_switch_values, render, sample_values,
                    state_values)

log = logging.getLogger("bmsbus.ha_bridge")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("bmsbus-ha-bridge")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0.0.0"


ORIGIN = Origin(sw=_version())


@dataclass(slots=True)
class View:
    """What the bridge knows about one HA device (a pack or a group)."""

    id: str
    kind: str  # "pack" / "group"
    meta: Meta | None = None
    battery: BatteryState | None = None  # the last battery/<id>/state
    control: Control | None = None  # the last battery/<id>/control
    settings: SettingsState | None = None  # the last battery/<id>/settings
    link: Link | None = None
    switches: dict[str, bool] | None = None  # a pack's switch states in its last sample
    cells: int | None = None
    temperatures: int | None = None
    readonly_switches: tuple[str, ...] = ()
    state_keys: frozenset[str] = frozenset()
    control_keys: frozenset[str] = frozenset()
    group_temperatures: int | None = None
    rssi: bool = False
    last_command: str | None = None
    facts: PackFacts | GroupFacts | None = None
    entities: list[Entity] = field(default_factory=list)
    config: dict[str, Any] | None = None  # the discovery config last published (None: none retained)
    states: dict[str, bytes] = field(default_factory=dict)  # source -> last HA state payload


class HaBridge:
    STATE_DELAY = 1.0  # s between re-sent configs and re-sent states after HA's birth (HA subscribes in between)
    MAX_PENDING = 256

    def __init__(self, cfg: Config, *, origin: Origin = ORIGIN) -> None:
        assert cfg.mqtt is not None
        self.cfg = cfg
        self.hb = cfg.ha_bridge
        self.origin = origin
        self.topics = Topics(cfg.topic_root, cfg.site)
        self.ha = HaTopics(self.topics, cfg.site, self.hb.discovery_prefix)
        self.inbox = Inbox(self.topics, "ha_bridge")
        self.views: dict[str, View] = {}
        self.births: dict[str, set[str]] = {}
        self.pending: OrderedDict[str, tuple[str, str]] = OrderedDict()  # command id -> (device, what)
        self.group_names = {g.id: g.name or g.id for g in cfg.aggregator.groups}
        self.bus: Bus | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._birth_task: asyncio.Task[None] | None = None
        self._connected_at = 0.0
        self.cleaned = asyncio.Event()  # set once the start-up stale cleanup ran (tests wait on it)

    # --- connection ------------------------------------------------------------------------------

    def connect(self) -> Bus:
        return Bus(self.cfg.mqtt, client_id=f"bmsbus-ha-bridge-{self.cfg.site}",  # type: ignore[arg-type]
                   will=(self.ha.status, OFFLINE))

    async def on_bus(self, bus: Bus) -> None:
        self._connected_at = time.monotonic()
        await bus.publish(self.ha.status, ONLINE, retain=True)
        t = self.topics
        await bus.subscribe(self.hb.birth_topic, t.all_of("birth"), t.all_of("meta"), t.all_of("link"),
                            t.all_of("state"), t.all_of("control"), t.all_of("settings"), t.all_of("sample"),
                            t.all_of("cmd_result"), t.all_of("battery_cmd_result"), self.ha.all_commands())
        self.bus = bus
        try:
            # After a reconnect: what we know is re-sent (retained configs may have been lost with the broker).
            for view in list(self.views.values()):
                if view.config is not None:
                    await self._publish_config(view, view.config)
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._listen(bus), name="ha-listen")
                if self.hb.remove_stale and not self.cleaned.is_set():
                    tg.create_task(self._remove_stale(), name="ha-stale")
        finally:
            self.bus = None
            self._tg = None
            try:
                async with asyncio.timeout(2):
                    await bus.publish(self.ha.status, OFFLINE, retain=True)
            except Exception:  # noqa: BLE001 - best effort on the way out; the will covers the rest
                pass

    async def run(self) -> None:
        if not self.hb.enabled:
            log.info("ha_bridge.enabled is false; not starting")
            return
        log.info("ha-bridge: discovery under %s/, HA state and commands under %s/", self.ha.prefix, self.ha.base)
        await run_connected("ha-bridge", self.connect, self.on_bus)

    # --- incoming --------------------------------------------------------------------------------

    async def _listen(self, bus: Bus) -> None:
        async for msg in bus.messages():
            await self.handle(msg)

    async def handle(self, msg: Message) -> None:
        if msg.topic == self.hb.birth_topic:
            if msg.payload.strip() == ONLINE.encode():
                self._schedule_republish()
            return
        command = self.ha.parse_command(msg.topic)
        if command is not None:
            await self._on_command(msg, *command)
            return
        ref = self.topics.parse(msg.topic)
        if ref is None:
            return
        if not ID_PATTERN.match(ref.entity):
            self.inbox.skip(ref.kind, msg.topic, f"{ref.entity!r} is not a valid id")
            return
        if not msg.payload:  # a cleared retained topic
            view = self.views.get(ref.entity)
            if view is None:
                return
            if ref.kind == "meta":
                view.meta = None
            elif ref.kind == "state":
                view.battery, view.state_keys = None, frozenset()
            elif ref.kind == "control":
                view.control, view.control_keys = None, frozenset()
            elif ref.kind == "settings":
                view.settings = None
            else:
                return
            await self._sync(view)
            return
        decoded = self.inbox.decode(msg)
        if decoded is None:
            return
        ref, model = decoded
        own = getattr(model, "bms", None) if isinstance(model, (Sample, Meta, Link)) else getattr(model, "id", None)
        if isinstance(model, (Sample, Meta, Link, BatteryState, Control, SettingsState)) and own != ref.entity:
            self.inbox.skip(ref.kind, msg.topic, f"message about {own!r} on the topic of {ref.entity!r}")
            return
        if isinstance(model, Sample):
            await self._on_sample(ref.entity, model)
        elif isinstance(model, BatteryState):
            await self._on_battery(ref.entity, model)
        elif isinstance(model, Link):
            await self._on_link(ref.entity, model)
        elif isinstance(model, Meta):
            view = self._view(ref.entity, "pack")
            view.meta = model
            if not await self._sync(view):  # a new config is followed by its states, this one included
                await self._publish_bms_settings(view)
            for group in list(self.views.values()):  # a group's switches depend on its members' metas
                if group.kind == "group" and ref.entity in self._members(group):
                    await self._sync(group)
        elif isinstance(model, Birth):
            self.births[model.collector] = {d.bms for d in model.devices}
            for view in list(self.views.values()):
                if view.meta is not None and view.meta.collector == model.collector:
                    await self._sync(view)
        elif isinstance(model, Control):
            await self._on_control(ref.entity, model)
        elif isinstance(model, SettingsState):
            await self._on_settings(ref.entity, model)
        elif isinstance(model, CommandResult):
            if ref.kind == "cmd_result" or model.bms == ref.entity:  # a group's own result, not a member's
                await self._on_result(ref.entity, model)

    def _view(self, id: str, kind: str) -> View:
        view = self.views.get(id)
        if view is None:
            view = self.views[id] = View(id=id, kind=kind)
        elif kind == "group" and view.kind != "group" and view.meta is None:
            view.kind = "group"
        return view

    async def _on_sample(self, bms: str, s: Sample) -> None:
        view = self._view(bms, "pack")
        if view.kind != "pack":
            return
        if s.cell_voltages is not None and view.cells is None:
            view.cells = len(s.cell_voltages)
        if s.temperatures is not None and view.temperatures is None:
            view.temperatures = len(s.temperatures)
        if s.switches:
            view.switches = s.switches
            writable = {sw.name for sw in view.meta.switches if sw.writable} if view.meta else set()
            extra = tuple(n for n in s.switches if n not in writable and n not in view.readonly_switches)
            if extra:
                view.readonly_switches += extra
        await self._sync(view)
        await self._publish_state(view, SAMPLE, sample_values(s))
        for group in self.views.values():
            if group.kind == "group" and bms in self._members(group) and group.facts is not None:
                await self._publish_group_switches(group)

    def _members(self, group: View) -> list[str]:
        if group.battery is not None and group.battery.members:
            return group.battery.members
        return next((g.members for g in self.cfg.aggregator.groups if g.id == group.id), [])

    async def _publish_group_switches(self, group: View) -> None:
        assert isinstance(group.facts, GroupFacts)
        if group.facts.writable_switches:
            members = [self.views[m].switches if m in self.views else None for m in self._members(group)]
            await self._publish_state(group, SAMPLE, group_switch_values(members, group.facts.writable_switches))

    async def _on_control(self, id: str, c: Control) -> None:
        view = self._view(id, c.kind)
        view.control = c
        view.control_keys = view.control_keys | {k for k, v in c.model_dump().items() if v is not None}
        if not await self._sync(view):
            await self._publish_state(view, CONTROL, control_values(c))

    async def _on_settings(self, id: str, settings: SettingsState) -> None:
        """The aggregator's settings: they decide which numbers/selects exist and are their state."""
        view = self._view(id, settings.kind)
        view.settings = settings
        if not await self._sync(view):
            await self._publish_state(view, SETTINGS, dict(settings.values))

    async def _on_battery(self, id: str, st: BatteryState) -> None:
        view = self._view(id, st.kind)
        view.battery = st
        keys = set(st.model_dump(exclude_none=True))
        view.state_keys = view.state_keys | keys  # grows only: a value missing once must not remove an entity
        if st.temperatures is not None:
            view.group_temperatures = max(view.group_temperatures or 0, len(st.temperatures))
        await self._sync(view)
        await self._publish_state(view, STATE, state_values(st))

    async def _on_link(self, bms: str, link: Link) -> None:
        view = self._view(bms, "pack")
        view.link = link
        if link.rssi is not None:
            view.rssi = True
        if not await self._sync(view):
            await self._publish_diag(view)

    async def _on_result(self, bms: str, result: CommandResult) -> None:
        pending = self.pending.get(result.id)
        if pending is None or pending[0] != bms:
            return  # not one of ours (or another device's)
        del self.pending[result.id]
        _, what = pending
        view = self.views.get(bms)
        if result.status != "ok":
            log.warning("command %s on %s (%s) %s: %s", result.id, bms, what, result.status, result.reason or "")
        if view is not None:
            view.last_command = cmds.describe(what, result)
            await self._publish_diag(view)

    async def _send(self, view: View, topic: str, model: Any, what: str) -> None:
        """Publish a translated command, remember it for its result and show it as sent."""
        self.pending[model.id] = (view.id, what)
        while len(self.pending) > self.MAX_PENDING:
            self.pending.popitem(last=False)
        await self._publish(topic, model.to_json())
        log.info("HA: %s %s (command %s)", view.id, what, model.id)
        view.last_command = cmds.describe(what, None)
        await self._publish_diag(view)

    async def _refuse(self, view: View, topic: str, what: str, reason: str) -> None:
        """A command HA sent that the bridge will not put on the bus: counted, logged and shown in HA."""
        self.inbox.skip("ha_command", topic, f"{what}: {reason}")
        view.last_command = cmds.describe_refusal(what, reason)
        await self._publish_diag(view)

    async def _on_command(self, msg: Message, device: str, platform: str, name: str) -> None:
        if msg.retain:
            self.inbox.skip("ha_command", msg.topic, "retained command ignored")
            return
        view = self.views.get(device)
        if view is None or view.config is None:
            self.inbox.skip("ha_command", msg.topic, f"no such HA device {device!r}")
            return
        entity = next((e for e in view.entities if e.command == f"{platform}/{name}"), None)
        if entity is None:
            self.inbox.skip("ha_command", msg.topic, f"{device} has no {platform} {name!r}")
            return
        now = time.time()
        expiry = self.hb.command_expiry
        t = self.topics
        if platform == "switch":
            try:
                command = cmds.switch_command(name, msg.payload, now=now, expiry=expiry)
            except cmds.CommandError as exc:
                await self._refuse(view, msg.topic, name, str(exc))
                return
            target = t.bms_cmd(device) if view.kind == "pack" else t.battery_cmd(device)
            await self._send(view, target, command, cmds.what_switch(name, command.value))
        elif platform == "button":  # reset_meters, the only button
            try:
                reset = cmds.meters_reset(device, msg.payload, now=now, expiry=expiry)
            except cmds.CommandError as exc:
                await self._refuse(view, msg.topic, cmds.WHAT_RESET, str(exc))
                return
            await self._send(view, t.battery_meters_reset(device), reset, cmds.WHAT_RESET)
        elif (bms_spec := self._bms_setting(view, name)) is not None:  # a number for a setting of the BMS
            try:
                command = cmds.bms_setting_command(bms_spec, msg.payload, now=now, expiry=expiry)
            except cmds.CommandError as exc:
                shown = msg.payload.decode(errors="replace").strip()[:20]
                await self._refuse(view, msg.topic, f"{entity.name} {shown}", str(exc))
                return
            assert command.number is not None
            await self._send(view, t.bms_cmd(device), command,
                             cmds.what_bms_setting(entity.name, bms_spec, command.number))
        else:  # number / select: an aggregator setting
            spec = SETTING_SPECS.get(name)
            if spec is None:  # a BMS setting its meta no longer declares
                self.inbox.skip("ha_command", msg.topic, f"{device} has no setting {name!r} (any more)")
                return
            try:
                request = cmds.setting_request(device, spec, msg.payload, now=now, expiry=expiry,
                                               options=entity.options)
            except cmds.CommandError as exc:
                shown = msg.payload.decode(errors="replace").strip()[:20]
                await self._refuse(view, msg.topic, f"{spec.name} {shown}", str(exc))
                return
            await self._send(view, t.battery_settings_set(device), request,
                             cmds.what_setting(spec, request.settings[name]))  # type: ignore[arg-type]

    @staticmethod
    def _bms_setting(view: View, key: str) -> BmsSettingSpec | None:
        """The BMS setting behind a number's key (`bms_<name>`), as the pack's meta declares it."""
        if view.kind != "pack" or view.meta is None:
            return None
        return next((s for s in view.meta.setting_specs if bms_setting_key(s.name) == key), None)

    # --- discovery -------------------------------------------------------------------------------

    def _present(self, view: View) -> bool:
        if view.kind == "group":
            return view.battery is not None
        if view.meta is None:
            return False
        listed = self.births.get(view.meta.collector)
        return listed is None or view.id in listed

    def _facts(self, view: View) -> PackFacts | GroupFacts:
        settings = tuple(k for k in view.settings.values if k in SETTING_SPECS) if view.settings is not None else ()
        if view.kind == "group":
            return GroupFacts(state_keys=view.state_keys, temperatures=view.group_temperatures,
                              control_keys=view.control_keys, settings=settings,
                              writable_switches=self._group_switches(view))
        meta = view.meta
        assert meta is not None
        # Switch names become topic levels and unique-id suffixes: only id-safe names get entities.
        writable = tuple(s.name for s in meta.switches if s.writable and ID_PATTERN.match(s.name))
        readonly = tuple(s.name for s in meta.switches if not s.writable and ID_PATTERN.match(s.name)) + tuple(
            n for n in view.readonly_switches if ID_PATTERN.match(n))
        return PackFacts(quantities=frozenset(meta.quantities), writable_switches=writable,
                         readonly_switches=tuple(dict.fromkeys(readonly)),
                         cells=meta.cell_count or view.cells, temperatures=meta.temperature_count or view.temperatures,
                         state_keys=view.state_keys, control_keys=view.control_keys, settings=settings,
                         rssi=view.rssi, bms_settings=tuple(meta.setting_specs))

    def _group_switches(self, group: View) -> tuple[str, ...]:
        """Switches every member declares writable (the aggregator fans a group command out to all)."""
        common: list[str] | None = None
        for m in self._members(group):
            meta = self.views[m].meta if m in self.views else None
            if meta is None:
                return ()
            names = [s.name for s in meta.switches if s.writable and ID_PATTERN.match(s.name)]
            common = names if common is None else [n for n in common if n in names]
        return tuple(common or ())

    def build_config(self, view: View) -> dict[str, Any]:
        if view.kind == "group":
            info = group_device_info(self.ha, view.id, self.group_names.get(view.id, view.id),
                                     view.battery.members if view.battery else ())
            return device_config(topics=self.ha, device=view.id, device_info=info, origin=self.origin,
                                 entities=view.entities, availability=group_availability(self.ha, view.id),
                                 expire_after=self.hb.expire_after)
        meta = view.meta
        assert meta is not None
        info = pack_device_info(self.ha, view.id, meta, serial_identifier=self._serial_unique(view))
        return device_config(topics=self.ha, device=view.id, device_info=info, origin=self.origin,
                             entities=view.entities, availability=pack_availability(self.ha, view.id, meta.collector),
                             expire_after=self.hb.expire_after, collector=meta.collector)

    def _serial_unique(self, view: View) -> bool:
        """A serial number identifies the device only if no other BMS reports the same one."""
        serial = view.meta.serial if view.meta else None
        return bool(serial) and not any(v is not view and v.meta and v.meta.serial == serial
                                        for v in self.views.values())

    async def _sync(self, view: View) -> bool:
        """Make the retained discovery of one device match what we know (publish, update or clear). True when a
        new config went out, followed by the states the bridge keeps (settings, control, diag)."""
        if not self._present(view):
            if view.config is not None:
                log.info("HA device %s left; clearing its discovery", view.id)
                await self._publish(self.ha.config(view.id), b"", retain=True)
                view.config, view.facts, view.entities = None, None, []
            return False
        facts = self._facts(view)
        if facts == view.facts and view.config is not None:
            return False
        view.facts = facts
        view.entities = pack_entities(facts) if isinstance(facts, PackFacts) else group_entities(facts)
        config = self.build_config(view)
        if config == view.config:
            return False
        if view.config is not None:
            removed = {k: c["platform"] for k, c in view.config["components"].items() if k not in config["components"]}
            if removed:  # HA's two steps: the component reduced to its platform, then the config without it
                await self._publish(self.ha.config(view.id), dumps(without(config, removed)), retain=True)
        await self._publish_config(view, config)
        log.info("HA device %s: discovery with %d entities", view.id, len(config["components"]))
        # Retained, rarely changing sources may have arrived before their entities existed (a group's settings
        # before its first state): HA would show them unknown until the next change. Samples and battery states
        # come every few seconds and are not kept.
        if view.settings is not None:
            await self._publish_state(view, SETTINGS, dict(view.settings.values))
        if view.control is not None:
            await self._publish_state(view, CONTROL, control_values(view.control))
        await self._publish_bms_settings(view)
        await self._publish_diag(view)
        return True

    async def _publish_config(self, view: View, config: dict[str, Any]) -> None:
        view.config = config
        await self._publish(self.ha.config(view.id), dumps(config), retain=True)

    # --- HA state --------------------------------------------------------------------------------

    async def _publish_state(self, view: View, source: str, values: dict[str, Any]) -> None:
        if view.config is None:
            return
        payload = dumps(render(view.entities, source, values))
        view.states[source] = payload
        await self._publish(self.ha.state(view.id, source), payload)

    async def _publish_bms_settings(self, view: View) -> None:
        """The BMS's own settings (its numbers' state), from the meta: re-published with every meta."""
        if view.meta is not None and any(e.source == BMS_SETTINGS for e in view.entities):
            await self._publish_state(view, BMS_SETTINGS, bms_setting_values(view.meta))

    async def _publish_diag(self, view: View) -> None:
        if view.kind == "pack" and view.link is None:
            return  # link_state is an enum: never publish it without a value
        if not any(e.source == DIAG for e in view.entities):
            return
        await self._publish_state(view, DIAG, diag_values(view.link, view.last_command))

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self.bus is not None:
            await self.bus.publish(topic, payload, retain=retain)

    # --- HA birth and start-up cleanup ---------------------------------------------------------------

    def _schedule_republish(self) -> None:
        if self._tg is None:
            return
        if self._birth_task is not None and not self._birth_task.done():
            self._birth_task.cancel()
        self._birth_task = self._tg.create_task(self._republish(), name="ha-birth")

    async def _republish(self) -> None:
        """HA restarted: configs again (after a random delay, so many publishers do not storm HA), then states."""
        await asyncio.sleep(random.uniform(0, self.hb.republish_jitter))
        views = [v for v in self.views.values() if v.config is not None]
        log.info("HA is online: re-sending discovery of %d devices", len(views))
        for view in views:
            await self._publish(self.ha.config(view.id), dumps(view.config), retain=True)
        await asyncio.sleep(self.STATE_DELAY)
        for view in views:
            for source, payload in list(view.states.items()):
                await self._publish(self.ha.state(view.id, source), payload)

    async def _remove_stale(self) -> None:
        """Clear retained discovery of this site's devices that no longer exist."""
        found = await self._scan_configs(window=min(2.0, self.hb.settle_time) or 0.5)
        await asyncio.sleep(max(0.0, self._connected_at + self.hb.settle_time - time.monotonic()))
        for device in sorted(found):
            view = self.views.get(device)
            if view is None or view.config is None:
                log.info("clearing stale HA discovery of %s (no such device on the bus)", device)
                await self._publish(self.ha.config(device), b"", retain=True)
        self.cleaned.set()

    async def _scan_configs(self, window: float) -> set[str]:
        """Our retained discovery topics, read on a short-lived second connection (so the bridge's main
        connection never receives its own discovery echoes)."""
        found: set[str] = set()
        bus = Bus(self.cfg.mqtt, client_id=f"bmsbus-ha-bridge-{self.cfg.site}-scan")  # type: ignore[arg-type]
        async with bus:
            await bus.subscribe(self.ha.all_configs())
            try:
                async with asyncio.timeout(window):
                    async for m in bus.messages():
                        device = self.ha.device_of_config(m.topic)
                        if device and m.retain and m.payload:
                            found.add(device)
            except TimeoutError:
                pass
        return found


def config_json(view_config: dict[str, Any]) -> str:
    """Pretty JSON of a discovery config (docs, golden files)."""
    return json.dumps(view_config, indent=1, ensure_ascii=False, sort_keys=False) + "\n"


async def run(cfg: Config) -> None:
    await HaBridge(cfg).run()


SERVICE = ServiceSpec(name="ha-bridge", help="Home Assistant MQTT discovery, state and controls", run=run)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_service_command(sub, SERVICE)
