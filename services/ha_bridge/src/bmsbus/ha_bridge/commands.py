"""HA commands -> bus messages. Pure; no I/O.

HA publishes on our own tree, never under the discovery prefix:
    <root>/ha/<id>/switch/<switch>/set         ON / OFF             -> Command on bms/<id>/cmd (battery/<id>/cmd)
    <root>/ha/<id>/button/reset_meters/set     PRESS                -> MetersReset on battery/<id>/meters/reset
    <root>/ha/<id>/number/<setting>/set        a number             -> SettingsRequest on battery/<id>/settings/set
    <root>/ha/<id>/select/<setting>/set        one of the options   -> SettingsRequest on battery/<id>/settings/set
    <root>/ha/<id>/number/bms_<name>/set       a number             -> Command set_setting on bms/<id>/cmd
Each translated message is a bus model (validated on construction) with a fresh id and a short expiry, so a late
or replayed one is refused downstream. A setting is also checked against its spec (`bmsbus.shared.settings`,
or for a BMS setting the `BmsSettingSpec` its meta declares) here, so a bad value is refused with its reason
before it reaches the bus.
"""

from __future__ import annotations

import math
import uuid

from pydantic import ValidationError

from bmsbus.shared.models import BmsSettingSpec, Command, CommandResult, MetersReset, SettingsRequest
from bmsbus.shared.settings import SettingSpec

ORIGIN = "ha_bridge"
PRESS = "PRESS"  # HA's default payload_press; the bridge's buttons do not change it


def new_id() -> str:
    return f"ha-{uuid.uuid4().hex[:12]}"


class CommandError(ValueError):
    """An HA command that cannot be translated (bad payload, value out of range). The text is the reason."""


def _text(payload: bytes) -> str:
    return payload.decode(errors="replace").strip()


def _invalid(exc: ValidationError) -> CommandError:
    first = exc.errors()[0]
    return CommandError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")


def switch_command(switch: str, payload: bytes, *, now: float, expiry: float, id: str | None = None) -> Command:
    text = _text(payload).upper()
    if text not in ("ON", "OFF"):
        raise CommandError(f"switch payload must be ON or OFF, got {text[:20]!r}")
    return Command(id=id or new_id(), switch=switch, value=text == "ON", issued=now, expires=now + expiry,
                   origin=ORIGIN)


def setting_value(spec: SettingSpec, payload: bytes, options: tuple[str, ...] | None = None) -> float | str:
    """The value HA sent for one setting, checked against the shared spec (and, for a choice, against the
    `options` this battery's select offers, e.g. a group's fewer); CommandError says why not."""
    text = _text(payload)
    value: object = text
    if spec.options is not None and options is not None and text not in options:
        raise CommandError(f"{spec.key}: {text[:20]!r} is not one of {list(options)} here")
    if spec.options is None:
        try:
            value = float(text)
        except ValueError:
            raise CommandError(f"{spec.key}: not a number: {text[:20]!r}") from None
    try:
        return spec.validate(value)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def setting_request(battery: str, spec: SettingSpec, payload: bytes, *, now: float, expiry: float,
                    id: str | None = None, options: tuple[str, ...] | None = None) -> SettingsRequest:
    """`battery/<id>/settings/set`: one setting per HA change."""
    value = setting_value(spec, payload, options)
    try:
        return SettingsRequest(id=id or new_id(), battery=battery, settings={spec.key: value}, issued=now,
                               expires=now + expiry, origin=ORIGIN)
    except ValidationError as exc:
        raise _invalid(exc) from None


def bms_setting_command(spec: BmsSettingSpec, payload: bytes, *, now: float, expiry: float,
                        id: str | None = None) -> Command:
    """`bms/<id>/cmd` set_setting: one BMS setting per HA change, in the range the BMS declares."""
    text = _text(payload)
    try:
        number = float(text)
    except ValueError:
        raise CommandError(f"{spec.name}: not a number: {text[:20]!r}") from None
    if not math.isfinite(number) or not spec.min <= number <= spec.max:
        raise CommandError(f"{spec.name}: {text[:20]} is outside {spec.min:g}..{spec.max:g} {spec.unit or ''}"
                           .rstrip())
    return Command(id=id or new_id(), action="set_setting", setting=spec.name, number=number, issued=now,
                   expires=now + expiry, origin=ORIGIN)


def meters_reset(battery: str, payload: bytes, *, now: float, expiry: float, id: str | None = None) -> MetersReset:
    """`battery/<id>/meters/reset`: reset the computed meters and cycle counters of one pack or group."""
    text = _text(payload)
    if text != PRESS:
        raise CommandError(f"button payload must be {PRESS}, got {text[:20]!r}")
    try:
        return MetersReset(id=id or new_id(), battery=battery, issued=now, expires=now + expiry, origin=ORIGIN)
    except ValidationError as exc:
        raise _invalid(exc) from None


# --- the text of the "Last command" sensor ---------------------------------------------------------------

def what_switch(switch: str, value: bool) -> str:
    return f"{switch} {'ON' if value else 'OFF'}"


def what_setting(spec: SettingSpec, value: float | str) -> str:
    shown = f"{value:g}" if isinstance(value, float) else value
    return f"{spec.name} {shown}{' ' + spec.unit if spec.unit else ''}"


def what_bms_setting(label: str, spec: BmsSettingSpec, value: float) -> str:
    """`Cell OVP 3.6 V`."""
    return f"{label} {value:g}{' ' + spec.unit if spec.unit else ''}"


WHAT_RESET = "Reset meters"


def describe(what: str, result: CommandResult | None) -> str:
    """`charge OFF: sent`, `SoC charge stop 85 %: ok`, `Reset meters: rejected (expired 1.0 s ago)`."""
    if result is None:
        return f"{what}: sent"[:255]
    text = f"{what}: {result.status}"
    if result.reason:
        text += f" ({result.reason})"
    return text[:255]


def describe_refusal(what: str, reason: str) -> str:
    """A command the bridge did not send: `Max cell voltage 5: refused (max_cell_voltage: 5.0 is outside ...)`."""
    return f"{what}: refused ({reason})"[:255]
