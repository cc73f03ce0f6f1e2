"""Device-based MQTT discovery payloads (HA >= 2024.12). Pure; no I/O.

One discovery message per HA device: `<prefix>/device/bmsbus_<site>_<id>/config`, retained. A device is a
pack (one BMS, id = the BMS id) or a group (id = the group id). Unique ids are `bmsbus_<site>_<id>_<key>`:
derived from the stable bus id and the catalog key, never from a display name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bmsbus.shared.topics import Topics, slug

from .entities import Entity

LINK_AVAILABLE: Final = "{{ 'online' if value_json.ok else 'offline' }}"
GROUP_AVAILABLE: Final = "{{ 'offline' if value_json.stale else 'online' }}"
DISCOVERY_PART: Final = re.compile(r"^[a-zA-Z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class Origin:
    name: str = "bmsbus"
    sw: str = "0.0.0"
    url: str = "https://github.com/bmsbus/bmsbus"

    def payload(self) -> dict[str, str]:
        return {"name": self.name, "sw_version": self.sw, "support_url": self.url}


class HaTopics:
    """Every topic the bridge publishes or listens to for HA."""

    def __init__(self, bus: Topics, site: str, discovery_prefix: str) -> None:
        self.bus = bus
        self.site = site
        self.prefix = discovery_prefix.strip("/")
        self.base = f"{bus.root}/ha"

    # discovery
    def object_id(self, device: str) -> str:
        oid = f"bmsbus_{self.site}_{device}"
        assert DISCOVERY_PART.match(oid), oid
        return oid

    def config(self, device: str) -> str:
        return f"{self.prefix}/device/{self.object_id(device)}/config"

    def all_configs(self) -> str:
        return f"{self.prefix}/device/+/config"

    def device_of_config(self, topic: str) -> str | None:
        """The device id of one of OUR discovery topics (this site), else None."""
        head, tail = f"{self.prefix}/device/bmsbus_{self.site}_", "/config"
        if topic.startswith(head) and topic.endswith(tail):
            dev = topic[len(head):-len(tail)]
            return dev if dev and "/" not in dev else None
        return None

    # HA-facing state and commands, under our own tree
    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def state(self, device: str, source: str) -> str:
        return f"{self.base}/{device}/{source}"

    def command(self, device: str, command: str) -> str:
        return f"{self.base}/{device}/{command}/set"

    def all_commands(self) -> str:
        return f"{self.base}/+/+/+/set"

    def parse_command(self, topic: str) -> tuple[str, str, str] | None:
        """(device, platform, name) of a command topic, else None."""
        if not topic.startswith(self.base + "/"):
            return None
        parts = topic[len(self.base) + 1:].split("/")
        if len(parts) != 4 or parts[3] != "set":
            return None
        return parts[0], parts[1], parts[2]


def component(e: Entity, *, topics: HaTopics, device: str, entity_base: str, expire_after: int,
              collector: str | None) -> dict[str, Any]:
    """One entry of `components`. Full option names (no abbreviations) for readability."""
    c: dict[str, Any] = {"platform": e.platform, "name": e.name,
                         "unique_id": f"{topics.object_id(device)}_{e.key}",
                         "default_entity_id": f"{e.platform}.{entity_base}_{e.key}",
                         "object_id": f"{entity_base}_{e.key}"}  # deprecated spelling for HA < 2025.10
    if e.source is not None:
        c["state_topic"] = topics.state(device, e.source)
        c["value_template"] = "{{ value_json.%s }}" % e.key
    if e.device_class:
        c["device_class"] = e.device_class
    if e.state_class:
        c["state_class"] = e.state_class
    if e.unit:
        c["unit_of_measurement"] = e.unit
    if e.precision is not None and e.platform == "sensor":
        c["suggested_display_precision"] = e.precision
    if e.options is not None:
        c["options"] = list(e.options)
    if e.command:
        c["command_topic"] = topics.command(device, e.command)
        c["qos"] = 1
    if e.platform in ("sensor", "binary_sensor") and e.expires and expire_after > 0:
        c["expire_after"] = expire_after
    if e.category:
        c["entity_category"] = e.category
    if not e.enabled:
        c["enabled_by_default"] = False
    c.update(e.extra)
    if e.link_independent and collector is not None:
        c["availability"] = [{"topic": topics.status}, {"topic": topics.bus.collector_status(collector)}]
        c["availability_mode"] = "all"
    return c


def pack_device_info(topics: HaTopics, device: str, meta: Any, *, serial_identifier: bool) -> dict[str, Any]:
    ids = [topics.object_id(device)]
    if meta.serial and serial_identifier:
        ids.append(f"bmsbus_sn_{slug(meta.serial)}")
    info: dict[str, Any] = {"identifiers": ids, "name": meta.name}
    for key, value in (("manufacturer", meta.manufacturer), ("model", meta.model),
                       ("sw_version", meta.sw_version), ("hw_version", meta.hw_version),
                       ("serial_number", meta.serial)):
        if value:
            info[key] = value
    return info


def group_device_info(topics: HaTopics, device: str, name: str, members: Iterable[str]) -> dict[str, Any]:
    members = list(members)
    return {"identifiers": [topics.object_id(device)], "name": name, "manufacturer": "bmsbus",
            "model": f"battery group of {len(members)}" if members else "battery group"}


def pack_availability(topics: HaTopics, device: str, collector: str) -> list[dict[str, str]]:
    return [{"topic": topics.status},
            {"topic": topics.bus.collector_status(collector)},
            {"topic": topics.bus.bms_link(device), "value_template": LINK_AVAILABLE}]


def group_availability(topics: HaTopics, device: str) -> list[dict[str, str]]:
    return [{"topic": topics.status},
            {"topic": topics.bus.battery_state(device), "value_template": GROUP_AVAILABLE}]


def device_config(*, topics: HaTopics, device: str, device_info: Mapping[str, Any], origin: Origin,
                  entities: Iterable[Entity], availability: list[dict[str, str]], expire_after: int,
                  collector: str | None = None) -> dict[str, Any]:
    entity_base = slug(str(device_info.get("name") or device))
    return {
        "device": dict(device_info),
        "origin": origin.payload(),
        "availability": availability,
        "availability_mode": "all",
        "components": {e.key: component(e, topics=topics, device=device, entity_base=entity_base,
                                        expire_after=expire_after, collector=collector) for e in entities},
    }


def without(config: Mapping[str, Any], removed: Mapping[str, str]) -> dict[str, Any]:
    """The first of HA's two steps to remove components: the same config with each removed component reduced
    to its platform only (`{"platform": "sensor"}`); the caller then publishes the config without them."""
    out = dict(config)
    out["components"] = {**config["components"], **{k: {"platform": p} for k, p in removed.items()}}
    return out
