"""The aggregator's whole state and every rule that changes it, without I/O.

Inputs are `on_sample(sample, now)` and `tick(now)`; `now` is the aggregator's clock (staleness,
telemetry loss), `sample.ts` the source clock (meters, charge-control timers). Given the same inputs in the
same order the engine ends in the same state: that is what lets the store replay its journal after a
crash. Side effects (commands, actions) are not performed here: they are appended to `effects` for the
service to carry out, and dropped during a replay.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bmsbus.shared.config import AggregatorConfig, DeviceConfig
from bmsbus.shared.models import BatteryState, Sample

from .groups import Group
from .pack import Pack

log = logging.getLogger("bmsbus.aggregator")

GROUPED_HISTORY = 1024  # committed points a group member keeps for interpolation
UNGROUPED_HISTORY = 2


@dataclass(frozen=True, slots=True)
class Effect:
    """Something the service should do in the world: publish a command, call a webhook, run a script."""

    kind: str
    target: str
    data: dict[str, Any]


class Engine:
    def __init__(self, cfg: AggregatorConfig, devices: Sequence[DeviceConfig] = ()) -> None:
        self.cfg = cfg
        self.devices = {d.id: d for d in devices if d.id}
        self.packs: dict[str, Pack] = {}
        self.groups: dict[str, Group] = {
            g.id: Group.new(g.id, g.name or g.id, g.members, g.topology, cfg.dt_max, cfg.timeout) for g in cfg.groups}
        self.groups_of: dict[str, list[str]] = {}
        for g in cfg.groups:
            for m in g.members:
                self.groups_of.setdefault(m, []).append(g.id)
        self.dirty: set[str] = set()  # ids whose state changed since the service last published them
        self.refused = Counter[str]()
        self.effects: list[Effect] = []
        self._stale: dict[str, bool] = {}

    # -- inputs
    def pack(self, bms: str) -> Pack:
        pack = self.packs.get(bms)
        if pack is None:
            pack = self.packs[bms] = Pack.new(bms, self.cfg.dt_max, self.cfg.reorder_window)
            pack.history = type(pack.history)(maxlen=GROUPED_HISTORY if bms in self.groups_of else UNGROUPED_HISTORY)
        return pack

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
        for id in self.packs.keys() | self.groups.keys():
            stale = self._is_stale(id, now)
            if self._stale.get(id) != stale:
                self._stale[id] = stale
                self.dirty.add(id)
        return changed

    def _commit(self, pack: Pack, points: list[Any]) -> None:
        if not points:
            return
        for gid in self.groups_of.get(pack.id, ()):
            self.groups[gid].committed(points, self.packs)
            self.dirty.add(gid)

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
            kind = "group"
        else:
            pack = self.packs[id]
            values = pack.readings()
            values["stale"] = pack.is_stale(now, self.cfg.timeout)
            kind = "pack"
        fields = {k: v for k, v in values.items() if v is not None and k in BatteryState.model_fields}
        return BatteryState(id=id, kind=kind, **fields)

    # -- persistence
    def dump(self) -> dict[str, Any]:
        return {"packs": {id: p.dump() for id, p in self.packs.items()},
                "groups": {id: g.dump() for id, g in self.groups.items()},
                "refused": dict(self.refused)}

    def load(self, d: dict[str, Any]) -> None:
        for id, pd in d.get("packs", {}).items():
            try:
                pack = Pack.load(id, pd, self.cfg.dt_max, self.cfg.reorder_window)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("state of pack %s unreadable (%s); its meters start from zero", id, exc)
                continue
            pack.history = type(pack.history)(pack.history,
                                              maxlen=GROUPED_HISTORY if id in self.groups_of else UNGROUPED_HISTORY)
            self.packs[id] = pack
        for id, gd in d.get("groups", {}).items():
            if id in self.groups:  # a group no longer configured is forgotten
                try:
                    self.groups[id].restore(gd)
                except (KeyError, TypeError, ValueError) as exc:
                    log.error("state of group %s unreadable (%s); its meters start from zero", id, exc)
        self.refused.update(d.get("refused", {}))
        self.dirty.update(self.ids())
