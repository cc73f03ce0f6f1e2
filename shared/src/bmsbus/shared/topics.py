"""The topic tree: the only coupling between services. `docs/topics.md` is its contract.

    <root>/collector/<collector>/status   retained "online"/"offline" (last will)
    <root>/collector/<collector>/birth    retained Birth
    <root>/bms/<bms>/meta                 retained Meta
    <root>/bms/<bms>/link                 retained Link
    <root>/bms/<bms>/sample               QoS 1 Sample, not retained
    <root>/bms/<bms>/cmd                  Command
    <root>/bms/<bms>/cmd/result           CommandResult
    <root>/battery/<id>/state             retained BatteryState
    <root>/battery/<id>/control           retained Control (aggregator: CVL/CCL/DCL, mode, reasons)
    <root>/battery/<id>/cmd               Command to a group (the aggregator fans it out to the members)
    <root>/battery/<id>/cmd/result        CommandResult per member (bms=member), then one for the group;
                                          also the answer to settings/set and meters/reset (bms=<id>)
    <root>/battery/<id>/settings          retained SettingsState (aggregator: runtime settings)
    <root>/battery/<id>/settings/set      SettingsRequest
    <root>/battery/<id>/meters/reset      MetersReset

`<root>` is `<topic_root>/<site>`, by default `bmsbus/v1/<site>`. Services never format topic strings
by hand: they call the builders here and `parse()` incoming topics back into a TopicRef.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from . import models

ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ONLINE: Final = "online"
OFFLINE: Final = "offline"


@dataclass(frozen=True, slots=True)
class TopicRef:
    """A parsed topic: which kind of message, about which entity."""

    kind: str  # status, birth, meta, link, sample, cmd, cmd_result, state
    entity: str  # collector id, bms id or battery id


# kind -> (branch, suffix) under the root
_LAYOUT: Final[dict[str, tuple[str, str]]] = {
    "status": ("collector", "status"),
    "birth": ("collector", "birth"),
    "meta": ("bms", "meta"),
    "link": ("bms", "link"),
    "sample": ("bms", "sample"),
    "cmd": ("bms", "cmd"),
    "cmd_result": ("bms", "cmd/result"),
    "state": ("battery", "state"),
    "control": ("battery", "control"),
    "battery_cmd": ("battery", "cmd"),
    "battery_cmd_result": ("battery", "cmd/result"),
    "settings": ("battery", "settings"),
    "settings_set": ("battery", "settings/set"),
    "meters_reset": ("battery", "meters/reset"),
}

MODEL_OF_KIND: Final[dict[str, type[models.BusModel]]] = {
    "birth": models.Birth,
    "meta": models.Meta,
    "link": models.Link,
    "sample": models.Sample,
    "cmd": models.Command,
    "cmd_result": models.CommandResult,
    "state": models.BatteryState,
    "control": models.Control,
    "battery_cmd": models.Command,
    "battery_cmd_result": models.CommandResult,
    "settings": models.SettingsState,
    "settings_set": models.SettingsRequest,
    "meters_reset": models.MetersReset,
}


def slug(name: str) -> str:
    """A topic- and HA-safe id from any name: lower case, [a-z0-9_-], at most 64 characters."""
    s = re.sub(r"[^a-z0-9_-]+", "_", name.strip().lower()).strip("_")
    return (s or "unnamed")[:64]


class Topics:
    def __init__(self, topic_root: str, site: str) -> None:
        if not ID_PATTERN.match(site):
            raise ValueError(f"site {site!r} must match [A-Za-z0-9_-]")
        self.root = f"{topic_root.strip('/')}/{site}"
        self._depth = self.root.count("/") + 1

    def topic(self, kind: str, entity: str) -> str:
        if not ID_PATTERN.match(entity):
            raise ValueError(f"{entity!r} is not a valid id for a topic (allowed: [A-Za-z0-9_-], 1..64)")
        branch, suffix = _LAYOUT[kind]
        return f"{self.root}/{branch}/{entity}/{suffix}"

    def all_of(self, kind: str) -> str:
        """Subscription filter for one kind of message from every entity."""
        branch, suffix = _LAYOUT[kind]
        return f"{self.root}/{branch}/+/{suffix}"

    # Convenience builders, named as the tree reads.
    def collector_status(self, collector: str) -> str:
        return self.topic("status", collector)

    def collector_birth(self, collector: str) -> str:
        return self.topic("birth", collector)

    def bms_meta(self, bms: str) -> str:
        return self.topic("meta", bms)

    def bms_link(self, bms: str) -> str:
        return self.topic("link", bms)

    def bms_sample(self, bms: str) -> str:
        return self.topic("sample", bms)

    def bms_cmd(self, bms: str) -> str:
        return self.topic("cmd", bms)

    def bms_cmd_result(self, bms: str) -> str:
        return self.topic("cmd_result", bms)

    def battery_state(self, battery: str) -> str:
        return self.topic("state", battery)

    def battery_control(self, battery: str) -> str:
        return self.topic("control", battery)

    def battery_cmd(self, battery: str) -> str:
        return self.topic("battery_cmd", battery)

    def battery_cmd_result(self, battery: str) -> str:
        return self.topic("battery_cmd_result", battery)

    def battery_settings(self, battery: str) -> str:
        return self.topic("settings", battery)

    def battery_settings_set(self, battery: str) -> str:
        return self.topic("settings_set", battery)

    def battery_meters_reset(self, battery: str) -> str:
        return self.topic("meters_reset", battery)

    def parse(self, topic: str) -> TopicRef | None:
        """The TopicRef of a topic in our tree, or None if it is not one of ours."""
        if not topic.startswith(self.root + "/"):
            return None
        parts = topic[len(self.root) + 1 :].split("/")
        if len(parts) < 3:
            return None
        branch, entity, suffix = parts[0], parts[1], "/".join(parts[2:])
        for kind, (b, s) in _LAYOUT.items():
            if b == branch and s == suffix:
                return TopicRef(kind, entity)
        return None
