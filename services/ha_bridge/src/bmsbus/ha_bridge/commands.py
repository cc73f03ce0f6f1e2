"""HA commands -> bus messages. Pure; no I/O.

HA publishes on our own tree, never under the discovery prefix:
    <root>/ha/<id>/switch/<switch>/set         ON / OFF             -> Command on bms/<id>/cmd
    <root>/ha/<id>/button/reset_meters/set     PRESS                -> <root>/battery/<id>/meters/reset
    <root>/ha/<id>/number/<setting>/set        a number             -> <root>/battery/<id>/settings/set
    <root>/ha/<id>/select/<setting>/set        one of the options   -> <root>/battery/<id>/settings/set
Each translated message gets a fresh id and a short expiry, so a late or replayed one is refused downstream.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, ClassVar

from pydantic import Field

from bmsbus.shared.models import SCHEMA_VERSION, BusModel, Command, CommandResult, Id, dumps

ORIGIN = "ha_bridge"


def new_id() -> str:
    return f"ha-{uuid.uuid4().hex[:12]}"


class CommandError(ValueError):
    """An HA command that cannot be translated (bad payload, unknown switch)."""


def switch_command(switch: str, payload: bytes, *, now: float, expiry: float, id: str | None = None) -> Command:
    text = payload.decode(errors="replace").strip().upper()
    if text not in ("ON", "OFF"):
        raise CommandError(f"switch payload must be ON or OFF, got {text[:20]!r}")
    return Command(id=id or new_id(), switch=switch, value=text == "ON", issued=now, expires=now + expiry,
                   origin=ORIGIN)


def _request(now: float, expiry: float, id: str | None, **body: Any) -> bytes:
    return dumps({"schema_version": SCHEMA_VERSION, "id": id or new_id(), **body, "issued": now,
                  "expires": now + expiry, "origin": ORIGIN})


def reset_meters_request(battery: str, *, now: float, expiry: float, id: str | None = None) -> bytes:
    """JSON for `<root>/battery/<id>/meters/reset`: reset the computed meters of one pack or group."""
    return _request(now, expiry, id, battery=battery)


def setting_request(battery: str, name: str, payload: bytes, *, kind: str, options: tuple[str, ...] = (),
                    now: float, expiry: float, id: str | None = None) -> bytes:
    """JSON for `<root>/battery/<id>/settings/set`: `{"settings": {name: value}}`, one setting at a time."""
    text = payload.decode(errors="replace").strip()
    value: Any
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise CommandError(f"setting {name}: not a number: {text[:20]!r}") from None
        if not math.isfinite(value):
            raise CommandError(f"setting {name}: not a finite number: {text[:20]!r}")
    else:
        if options and text not in options:
            raise CommandError(f"setting {name}: {text[:20]!r} is not one of {list(options)}")
        value = text
    return _request(now, expiry, id, battery=battery, settings={name: value})


def describe(switch: str, value: bool, result: CommandResult | None) -> str:
    """The text of the "Last command" sensor."""
    what = f"{switch} {'ON' if value else 'OFF'}"
    if result is None:
        return f"{what}: sent"
    text = f"{what}: {result.status}"
    if result.reason:
        text += f" ({result.reason})"
    return text[:255]


class SettingsState(BusModel):
    """PROPOSED (not yet in shared/models.py): the settings the aggregator keeps for one pack or group,
    retained on `<root>/battery/<id>/settings`. The bridge declares a number/select per known key."""

    topic_kind: ClassVar[str] = "settings"
    id: Id
    values: dict[str, float | str] = Field(default_factory=dict)
