"""The aggregator's whole state and every rule that changes it, without I/O.

Inputs are `on_sample(sample, now)`, `tick(now)`, `request_settings(...)` and `reset_meters(...)`;
`now` is the aggregator's clock (staleness, request expiry,
telemetry loss), `sample.ts` the source clock (meters, charge-control timers). Given the same inputs in the
same order the engine ends in the same state: that is what lets the store replay its journal after a
crash. Side effects (commands, publishes, webhooks, scripts) are not performed here: they are appended to
`effects` for the service to carry out, and dropped during a replay (they happened before the crash).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bmsbus.shared.config import ActionConfig, AggregatorConfig, CellStateConfig, ChargeControlConfig, DeviceConfig
from bmsbus.shared.models import ActiveAlarm, BatteryState, Control, MetersReset, Sample, SettingsRequest, SettingsState
from bmsbus.shared.models import Limit as LimitModel

from .alarms import Alarm, Alarms
from .battery_settings import (CURRENT_KEYS, AppliedRequests, BatterySettings, Effective, apply_changes,
                               changes_of, values_of)
from .cellstates import CellStates, quantity
from .control import Limit, Output, PackControl, Reading, group_output, lowest
from .groups import Group
from .meters import Point
from .pack import Pack
from .socwindow import SocWindow, SocWindowSpec

log = logging.getLogger("bmsbus.aggregator")

def _finite(v: Any) -> Any:
    """Sums of absurd (but finite) inputs can overflow: an infinite value is absent, never published."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [x for x in v if not isinstance(x, float) or math.isfinite(x)]
    return v


GROUPED_HISTORY = 1024  # committed points a group member keeps for interpolation
UNGROUPED_HISTORY = 2


@dataclass(frozen=True, slots=True)
class Effect:
    """Something the service should do in the world.

    kind "command": target = bms id, data {switch, value, origin}
    kind "publish": target = topic, data {payload, retain}
    kind "webhook": target = url, data {body, timeout, retries, headers}
    kind "script":  target = file name prefix "<rule>_<state>_", data {env}
    """

    kind: str
    target: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to a request: "ok" or "rejected" with the reason."""

    status: str
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Engine:
    def __init__(self, cfg: AggregatorConfig, devices: Sequence[DeviceConfig] = ()) -> None:
        self.cfg = cfg
        self.packs: dict[str, Pack] = {}
        self.groups: dict[str, Group] = {
            g.id: Group.new(g.id, g.name or g.id, g.members, g.topology, cfg.dt_max, cfg.timeout) for g in cfg.groups}
        self.groups_of: dict[str, list[str]] = {}
        for g in cfg.groups:
            for m in g.members:
                self.groups_of.setdefault(m, []).append(g.id)
        self.device_ids = {d.id for d in devices if d.id}
        # batmon SoC windows: per device from its `algorithm`, per group from the group's; runtime settings
        # may add, change or remove one (window_specs holds what applies).
        config_windows: dict[str, SocWindowSpec] = {}
        for d in devices:
            if d.algorithm and d.id:
                config_windows[d.id] = SocWindowSpec.parse(d.algorithm)
        for g in cfg.groups:
            if g.algorithm:
                config_windows[g.id] = SocWindowSpec.parse(g.algorithm)
        overrides = {id: o.model_dump(exclude_unset=True) for id, o in cfg.charge_control_overrides.items()}
        self.settings = BatterySettings(cfg.charge_control, overrides, config_windows, set(self.groups))
        self.applied_requests = AppliedRequests()
        self.window_specs: dict[str, SocWindowSpec] = dict(config_windows)
        self.windows: dict[str, SocWindow] = {id: SocWindow() for id in self.window_specs}
        self.controls: dict[str, PackControl] = {}
        self.alarms: dict[str, Alarms] = {}
        self.cell_states = CellStates()
        self.dirty: set[str] = set()  # ids whose state changed since the service last published them
        self.control_dirty: set[str] = set()
        self.settings_dirty: set[str] = self.device_ids | set(self.groups)
        self.refused = Counter[str]()
        self.effects: deque[Effect] = deque(maxlen=10_000)
        self._stale: dict[str, bool] = {}
        self.fets: dict[str, dict[str, bool]] = {}  # switch_fets: the last allow state acted on, per bms

    # -- inputs
    def pack(self, bms: str) -> Pack:
        pack = self.packs.get(bms)
        if pack is None:
            pack = self.packs[bms] = Pack.new(bms, self.cfg.dt_max, self.cfg.reorder_window)
            pack.history = deque(maxlen=GROUPED_HISTORY if bms in self.groups_of else UNGROUPED_HISTORY)
            self.settings_dirty.add(bms)  # a pack first seen on the bus gets its settings published too
        return pack

    def cc_of(self, id: str) -> ChargeControlConfig:
        """The charge-control config that applies to a pack or group (global ⊕ override ⊕ runtime)."""
        return self.settings.of(id).cc

    def on_sample(self, s: Sample, now: float) -> bool:
        """Take one sample; False if it was refused (duplicate or late; counted)."""
        pack = self.pack(s.bms)
        why = pack.offer(s, now)
        if why is not None:
            self.refused[why] += 1
            return False
        self._commit(pack, pack.release())
        self.dirty.add(pack.id)
        self.dirty.update(self.groups_of.get(pack.id, ()))
        if pack.live is s:  # the newest reading: act on it (a late one only feeds the meters)
            self._live(pack, s, now)
        return True

    def tick(self, now: float) -> bool:
        """Time passes. True if the state changed in a way a replay must reproduce (journal it)."""
        changed = False
        for pack in self.packs.values():
            # Nothing newer came within the window (aggregator clock): what is held is not waiting for
            # anything any more, so integrate it rather than let the meters lag.
            if pack.pending and pack.last_arrival is not None and now - pack.last_arrival >= self.cfg.reorder_window:
                self._commit(pack, pack.release(upto=float("inf")))
                self.dirty.add(pack.id)
                changed = True
            if pack.last_arrival is None:
                continue
            silent = now - pack.last_arrival
            if self.cfg.alarms.stale and silent > self.cfg.timeout:
                alarm = self.alarms_of(pack.id).raise_("stale", pack.last_arrival + self.cfg.timeout,
                                                       f"No data for more than {self.cfg.timeout:g} s")
                if alarm is not None:
                    self._new_alarms(pack.id, [alarm])
                    changed = True
            control = self.controls.get(pack.id)
            st = self.settings.of(pack.id)
            if control is not None and st.cc.enabled and control.silence(silent, st.cc):
                changed = True
                self.control_dirty.add(pack.id)
                if control.blocked:
                    alarm = self.alarms_of(pack.id).raise_("telemetry_lost", now)
                    if alarm is not None:
                        self._new_alarms(pack.id, [alarm])
                self._fet_actions(pack.id, control)
                self.control_dirty.update(self.groups_of.get(pack.id, ()))
        for gid in self.groups:
            if self._group_alarms(gid, now):
                changed = True
        for id in self.packs.keys() | self.groups.keys():
            stale = self._is_stale(id, now)
            if self._stale.get(id) != stale:
                self._stale[id] = stale
                self.dirty.add(id)
        return changed

    def _commit(self, pack: Pack, points: list[Point]) -> None:
        if not points:
            return
        for gid in self.groups_of.get(pack.id, ()):
            group = self.groups[gid]
            group.committed(points, self.packs, pack.id)
            self.dirty.add(gid)
            for m in group.members:
                self._trim_history(m)

    def _trim_history(self, member: str) -> None:
        """Keep only the points a group may still interpolate from: from the last one at or before the
        oldest time any of its groups has yet to evaluate."""
        pack = self.packs.get(member)
        if pack is None:
            return
        marks = [self.groups[g].evaluated_ts for g in self.groups_of.get(member, ())]
        if not marks or any(t is None for t in marks):
            return
        keep_from = min(marks)  # type: ignore[type-var]
        h = pack.history
        while len(h) >= 2 and h[1].ts <= keep_from:
            h.popleft()

    # -- rules on the newest reading
    def _live(self, pack: Pack, s: Sample, now: float) -> None:
        alarms = self.alarms_of(pack.id)
        alarms.clear("stale")
        alarms.clear("telemetry_lost")
        new = alarms.update("bms", {code: None for code in (s.alarms or [])}, s.ts)
        st = self.settings.of(pack.id)
        if st.cc.enabled:
            control = self.controls.setdefault(pack.id, PackControl())
            control.evaluate(Reading.of(s), st.cc, st.curves, hold=st.hold, max_reasons=st.max_reasons)
            self.control_dirty.add(pack.id)
            self._fet_actions(pack.id, control)
            if control.voltage.soc_too_low_to_float:
                if (a := alarms.raise_("soc_too_low_to_float", s.ts)) is not None:
                    new.append(a)
            else:
                alarms.clear("soc_too_low_to_float")
        self._new_alarms(pack.id, new)
        if pack.id in self.windows:
            switch = (s.switches or {}).get("charge")
            decision = self.windows[pack.id].evaluate(self.window_specs[pack.id], s.ts, s.soc, switch)
            if decision is not None:
                self._command(pack.id, "charge", decision[0], f"soc window: {decision[1]}")
        self._cell_states(pack.id, lambda: pack.readings())
        for gid in self.groups_of.get(pack.id, ()):
            self._group_live(gid, s, now)

    def _group_live(self, gid: str, s: Sample, now: float) -> None:
        if self.settings.of(gid).cc.enabled:
            self.control_dirty.add(gid)  # computed when published: once per interval, not per member sample
        g = self.groups[gid]
        if gid in self.windows:
            readings = g.readings(self.packs, now, lambda p: p.is_stale(now, self.cfg.timeout))
            members = [self.packs[m].live for m in g.members if m in self.packs and self.packs[m].live]
            states = [(m.switches or {}).get("charge") for m in members]  # type: ignore[union-attr]
            switch = True if any(st is True for st in states) else (False if states and all(
                st is False for st in states) else None)
            decision = self.windows[gid].evaluate(self.window_specs[gid], s.ts, readings.get("soc"), switch)
            if decision is not None:
                for m in g.members:
                    self._command(m, "charge", decision[0], f"soc window of {gid}: {decision[1]}")
        self._cell_states(gid, lambda: g.readings(self.packs, now, lambda p: p.is_stale(now, self.cfg.timeout)))

    def group_control(self, gid: str) -> Output | None:
        """The group's limits from its members' (those with charge_control off are left out, like members
        with no control yet), capped by the group's own maxima if it has any."""
        g = self.groups[gid]
        members = [(m, self.controls[m].output, self.packs[m].capacity) for m in g.members
                   if m in self.controls and self.controls[m].output is not None and self.settings.of(m).mode != "off"]
        out = group_output(g.topology, members)  # type: ignore[arg-type]
        st = self.settings.of(gid)
        if out is not None and st.caps:
            if "max_charge_current" in st.caps:
                out.ccl = lowest([out.ccl, Limit(st.caps["max_charge_current"], st.max_reason("max_charge_current"))])
            if "max_discharge_current" in st.caps:
                out.dcl = lowest([out.dcl, Limit(st.caps["max_discharge_current"],
                                                 st.max_reason("max_discharge_current"))])
        return out

    def _group_alarms(self, gid: str, now: float) -> bool:
        g = self.groups[gid]
        stale = [m for m in g.members if m not in self.packs or self.packs[m].is_stale(now, self.cfg.timeout)]
        alarms = self.alarms_of(gid)
        changed = False
        if stale and len(stale) < len(g.members):
            a = alarms.raise_("degraded", now, f"Silent members left out: {', '.join(stale)}")
            if a is not None:
                self._new_alarms(gid, [a])
                changed = True
        elif alarms.clear("degraded"):
            changed = True
        return changed

    def _fet_actions(self, bms: str, control: PackControl) -> None:
        """With switch_fets: switch charge/discharge off when a limit blocks, on when it clears."""
        st = self.settings.of(bms)
        if not st.cc.switch_fets or st.mode == "off" or control.output is None:
            return
        want = {"charge": control.allow_charge_ex_switch, "discharge": control.output.allow_discharge}
        # The discharge limit includes the BMS's own switch; switching on what the BMS itself turned off
        # would fight its protection, so only act on the aggregator's own reasons.
        if control.output.dcl.reason == "BMS discharge switch off":
            want.pop("discharge")
        last = self.fets.setdefault(bms, {})
        for switch, value in want.items():
            if last.get(switch) is None:
                last[switch] = value
                if value:
                    continue  # first evaluation and allowed: nothing to undo
            elif last[switch] == value:
                continue
            last[switch] = value
            reason = (control.output.ccl if switch == "charge" else control.output.dcl).reason
            self._command(bms, switch, value, f"charge control: {reason}")

    def _command(self, bms: str, switch: str, value: bool, origin: str) -> None:
        self.effects.append(Effect("command", bms, {"switch": switch, "value": value, "origin": origin}))

    def _cell_states(self, battery: str, readings: Any) -> None:
        rules = [r for r in self.cfg.cell_states
                 if (r.batteries is None and battery in self.packs) or (r.batteries and battery in r.batteries)]
        if not rules:
            return
        values = readings()
        for rule in rules:
            value = quantity(values, rule.quantity)
            state = self.cell_states.update(rule, battery, value)
            if state is not None:
                self._actions(rule, battery, state, value)  # type: ignore[arg-type]

    def _actions(self, rule: CellStateConfig, battery: str, state: str, value: float) -> None:
        fields = {"rule": rule.name, "state": state, "battery": battery, "value": f"{value:.4g}"}
        actions: list[ActionConfig] = rule.on_low if state == "low" else rule.on_normal
        for a in actions:
            if a.switch is not None:
                targets = self.groups[battery].members if battery in self.groups else [battery]
                for t in targets:
                    self._command(t, a.switch, bool(a.value), f"{rule.name} {state}: {rule.quantity} {value:.4g}")
            elif a.publish is not None:
                self.effects.append(Effect("publish", a.publish.format_map(fields), {
                    "payload": a.payload.format_map(fields), "retain": a.retain}))
            elif a.webhook is not None:
                self.effects.append(Effect("webhook", a.webhook.url, {
                    "body": {**fields, "value": value, "quantity": rule.quantity, "event": "cell_state"},
                    "timeout": a.webhook.timeout, "retries": a.webhook.retries, "headers": a.webhook.headers}))
        if self.cfg.scripts_dir is not None:
            self.effects.append(Effect("script", f"{rule.name}_{state}_", {"env": {
                "BMSBUS_RULE": rule.name, "BMSBUS_STATE": state, "BMSBUS_BATTERY": battery,
                "BMSBUS_QUANTITY": rule.quantity, "BMSBUS_VALUE": f"{value:.6g}"}}))

    def alarms_of(self, id: str) -> Alarms:
        a = self.alarms.get(id)
        if a is None:
            a = self.alarms[id] = Alarms()
        return a

    def _new_alarms(self, id: str, new: list[Alarm]) -> None:
        if not new:
            return
        self.dirty.add(id)
        hook = self.cfg.alarms.webhook
        if hook is None:
            return
        for a in new:
            self.effects.append(Effect("webhook", hook.url, {
                "body": {"event": "alarm", "battery": id, "code": a.code, "text": a.text, "since": a.since,
                         "severity": a.severity, "source": a.source},
                "timeout": hook.timeout, "retries": hook.retries, "headers": hook.headers}))

    # -- outputs
    def _is_stale(self, id: str, now: float) -> bool:
        if id in self.groups:
            return all(self._is_stale(m, now) for m in self.groups[id].members)
        pack = self.packs.get(id)
        return pack is None or pack.is_stale(now, self.cfg.timeout)

    def ids(self) -> list[str]:
        return [*self.packs, *self.groups]

    def state(self, id: str, now: float) -> BatteryState:
        if id in self.groups:
            g = self.groups[id]
            values = g.readings(self.packs, now, lambda p: p.is_stale(now, self.cfg.timeout))
            members = [self.packs[m] for m in g.members if m in self.packs]
            alarms = self.alarms_of(id).listing() + [
                {**a, "code": f"{p.id}:{a['code']}", "text": f"{p.id}: {a['text']}"}
                for p in members for a in self.alarms_of(p.id).listing()]
            cycles = [p.live.cycles for p in members if p.live and p.live.cycles is not None]
            if cycles:
                values["cycles"] = round(sum(cycles) / len(cycles))
            kind = "group"
        else:
            pack = self.packs[id]
            values = pack.readings()
            values["stale"] = pack.is_stale(now, self.cfg.timeout)
            alarms = self.alarms_of(id).listing()
            kind = "pack"
        fields = {k: f for k, v in values.items()
                  if k in BatteryState.model_fields and (f := _finite(v)) is not None}
        return BatteryState(id=id, kind=kind, alarms=[ActiveAlarm(**a) for a in alarms], **fields)

    def control(self, id: str, now: float) -> Control | None:
        if id in self.groups:
            if not self.settings.of(id).cc.enabled:
                return None
            out = self.group_control(id)
            kind = "group"
            members = {m: "Off" if self.settings.of(m).mode == "off" else output.mode
                       for m in self.groups[id].members
                       if m in self.controls and (output := self.controls[m].output) is not None}
        else:
            c = self.controls.get(id)
            out = c.output if c else None
            kind = "pack"
            members = {}
        window = self.windows.get(id)
        if self.settings.of(id).mode == "off" and (out is not None or members):
            # charge_control off: say so, with no limits at all (absent, so no consumer mistakes one for a 0).
            return Control(id=id, kind=kind, ts=now, mode="Off", soc_window=window.state if window else None,
                           members=members)
        if out is None:
            return None

        def lim(x: Limit | None) -> LimitModel | None:
            if x is None or not math.isfinite(x.value):
                return None
            return LimitModel(value=round(x.value, 6), reason=x.reason)

        return Control(id=id, kind=kind, ts=now, mode=out.mode, charge_voltage=lim(out.cvl),
                       charge_current=lim(out.ccl), discharge_current=lim(out.dcl), allow_charge=out.allow_charge,
                       allow_discharge=out.allow_discharge, soc_window=window.state if window else None,
                       soc_reset_due=out.soc_reset_due, last_full_charge=out.last_full_charge, members=members)

    # -- runtime settings and meter resets
    def known(self, id: str) -> bool:
        return id in self.device_ids or id in self.groups or id in self.packs

    def settings_ids(self) -> set[str]:
        return self.device_ids | set(self.groups) | set(self.packs)

    def _admit(self, kind: str, battery: str, req: SettingsRequest | MetersReset, now: float) -> Verdict | None:
        """The rejection of a request that must not be applied, or None."""
        if self.applied_requests.key(kind, battery, req.id) in self.applied_requests:
            return Verdict("rejected", "duplicate request id (already applied)")
        if now > req.expires:
            return Verdict("rejected", f"expired {now - req.expires:.1f} s ago")
        if req.battery is not None and req.battery != battery:
            return Verdict("rejected", f"request names battery {req.battery!r} but came on the topic of {battery!r}")
        if not self.known(battery):
            return Verdict("rejected", f"unknown battery {battery!r}; known: {sorted(self.settings_ids())}")
        return None

    def request_settings(self, battery: str, req: SettingsRequest, now: float) -> Verdict:
        """Apply a settings request entirely or not at all; applied at most once per id, never after expiry."""
        refusal = self._admit("settings", battery, req, now)
        if refusal is not None:
            return refusal
        before = self.settings.of(battery)
        changes, problems = changes_of(req.settings, before)
        if not problems:
            runtime = apply_changes(before.runtime, changes)
            try:
                after = self.settings.resolve(battery, runtime)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            return Verdict("rejected", "; ".join(problems))
        self.settings.set(battery, runtime, after)
        self.applied_requests.add(self.applied_requests.key("settings", battery, req.id), req.expires, now)
        self._settings_changed(battery, before, after)
        return Verdict("ok")

    def _settings_changed(self, id: str, before: Effective, after: Effective) -> None:
        self.settings_dirty.add(id)
        self.settings_dirty.update(self.groups_of.get(id, ()))  # a group shows what its members allow
        if after.window != before.window:
            resting = id in self.windows and not self.windows[id].charging
            self._sync_window(id)  # a changed window acts at its next trigger point, from the next sample
            if after.window is None and resting:
                # The window had switched charging off; with no window left nothing would ever switch it on.
                for bms in self.groups[id].members if id in self.groups else [id]:
                    self._command(bms, "charge", True, "soc window removed: charging allowed again")
            self.control_dirty.add(id)
        if id in self.groups:
            self.control_dirty.add(id)
            return
        control = self.controls.get(id)
        if control is not None and after.cc.enabled:
            if control.reapply(after.cc, after.curves, hold=after.hold, max_reasons=after.max_reasons,
                               voltage_target_changed=before.cc.max_cell_voltage != after.cc.max_cell_voltage):
                self._fet_actions(id, control)
        self.control_dirty.add(id)
        self.control_dirty.update(self.groups_of.get(id, ()))

    def _sync_window(self, id: str) -> None:
        """The SoC window of `id` as its settings say; its state (charging, last calibration) is kept."""
        window = self.settings.of(id).window
        if window is None:
            self.window_specs.pop(id, None)
            self.windows.pop(id, None)
        else:
            self.window_specs[id] = window
            self.windows.setdefault(id, SocWindow())

    def reset_meters(self, battery: str, req: MetersReset, now: float) -> Verdict:
        """Energy, charge and computed cycles of one pack or group to zero; at most once per id."""
        refusal = self._admit("reset", battery, req, now)
        if refusal is not None:
            return refusal
        if battery in self.groups:
            self.groups[battery].reset_meters(self.packs)
        elif battery in self.packs:
            self.packs[battery].meters.reset()
        # (a configured pack never heard of has nothing to reset)
        self.applied_requests.add(self.applied_requests.key("reset", battery, req.id), req.expires, now)
        self.dirty.add(battery)
        return Verdict("ok")

    def settings_state(self, id: str, now: float) -> SettingsState:
        e = self.settings.of(id)
        maxima: dict[str, float] = {}
        if id in self.groups and len(e.caps) < len(CURRENT_KEYS):
            members = [self.settings.of(m).cc for m in self.groups[id].members]
            members = [cc for cc in members if cc.enabled]
            if members:
                combine = min if self.groups[id].topology == "series" else sum
                maxima = {k: float(combine(getattr(cc, k) for cc in members)) for k in CURRENT_KEYS}
        return SettingsState(id=id, kind="group" if id in self.groups else "pack", ts=now,
                             values=values_of(e, maxima), overridden=sorted(e.runtime))

    # -- persistence
    def dump(self) -> dict[str, Any]:
        return {"packs": {id: p.dump() for id, p in self.packs.items()},
                "groups": {id: g.dump() for id, g in self.groups.items()},
                "controls": {id: c.dump() for id, c in self.controls.items()},
                "windows": {id: w.dump() for id, w in self.windows.items()},
                "alarms": {id: a.dump() for id, a in self.alarms.items()},
                "cell_states": self.cell_states.dump(),
                "fets": self.fets,
                "refused": dict(self.refused),
                "settings": self.settings.dump(),
                "applied_requests": self.applied_requests.dump()}

    def load(self, d: dict[str, Any]) -> None:
        # Settings first: a window created at run time must exist before its state is restored below.
        for problem in self.settings.load(d.get("settings", {})):
            log.error("runtime settings of %s; they no longer fit the config and were dropped", problem)
        for id in list(self.settings.runtime):
            self._sync_window(id)
        for id, pd in d.get("packs", {}).items():
            try:
                pack = Pack.load(id, pd, self.cfg.dt_max, self.cfg.reorder_window)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("state of pack %s unreadable (%s); its meters start from zero", id, exc)
                continue
            pack.history = deque(pack.history, maxlen=GROUPED_HISTORY if id in self.groups_of else UNGROUPED_HISTORY)
            self.packs[id] = pack
        for id, gd in d.get("groups", {}).items():
            if id in self.groups:  # a group no longer configured is forgotten
                try:
                    self.groups[id].restore(gd)
                except (KeyError, TypeError, ValueError) as exc:
                    log.error("state of group %s unreadable (%s); its meters start from zero", id, exc)
        for id, cd in d.get("controls", {}).items():
            try:
                self.controls[id] = PackControl.load(cd)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("charge-control state of %s unreadable (%s); it starts afresh", id, exc)
        for id, wd in d.get("windows", {}).items():
            if id in self.windows:
                self.windows[id] = SocWindow.load(wd)
        for id, ad in d.get("alarms", {}).items():
            self.alarms[id] = Alarms.load(ad)
        self.cell_states.load(d.get("cell_states", {}))
        self.fets.update(d.get("fets", {}))
        self.refused.update(d.get("refused", {}))
        self.applied_requests.load(d.get("applied_requests", {}))
        self.settings_dirty.update(self.settings_ids())
        self.dirty.update(self.ids())
        self.control_dirty.update(self.controls.keys() | self.groups.keys())
