"""Choosing the notify and write characteristics from a GATT table, the same way for every BLE backend.

By UUID *and* property: newer JK modules carry two characteristics with the same UUID (FFE1), a write-only
one and a notify-only one; older ones a single FFE1 doing both. The write mode is the protocol's
(`BleSpec.write_with_response`) where the characteristic offers it, else the one it offers.

Also the pieces every backend's CharLink (links/base.py) shares: `GattCharsSpec` (the spec of a device used
characteristic by characteristic), `find_char` (a characteristic by UUID and wanted property) and `char_tag`
(how a subscribed characteristic's notifications are tagged on the way to `receive()`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..driver import BleSpec
from .base import LinkError

BASE_UUID = "-0000-1000-8000-00805f9b34fb"
WRITE_PROPS = frozenset({"write", "write-without-response"})
NOTIFY_PROPS = frozenset({"notify", "indicate"})
# GATT characteristic property bits (ESPHome sends these as an int)
PROPERTY_BITS = {0x01: "broadcast", 0x02: "read", 0x04: "write-without-response", 0x08: "write", 0x10: "notify",
                 0x20: "indicate", 0x40: "authenticated-signed-writes", 0x80: "extended-properties"}


def uuid128(uuid: str) -> str:
    """'ffe1' / '0xFFE1' / '0000ffe1' / a full UUID -> the lower-case 128-bit form."""
    u = uuid.lower().removeprefix("0x")
    if len(u) == 4:
        return f"0000{u}{BASE_UUID}"
    if len(u) == 8:
        return f"{u}{BASE_UUID}"
    return u


def short(uuid: str) -> str:
    """The 16-bit form where there is one (for messages)."""
    return uuid[4:8] if uuid.endswith(BASE_UUID) and uuid.startswith("0000") else uuid


def property_names(bits: int) -> frozenset[str]:
    return frozenset(name for bit, name in PROPERTY_BITS.items() if bits & bit)


TAG_LEN = 4


@dataclass(frozen=True, slots=True)
class GattCharsSpec(BleSpec):
    """A BleSpec for a device used characteristic by characteristic through CharLink (Victron SmartShunt).

    `notify` and `write` still name one notify and the write characteristic, so a connect fails early on a
    device without them, but the link subscribes to nothing by itself: the driver calls `start_notify` for
    each characteristic it wants, and those notifications arrive tagged (`char_tag`)."""


def char_tag(uuid: str) -> bytes:
    """The 4-byte tag of a characteristic's values in `receive()`: the big-endian 32-bit prefix of its
    128-bit UUID (`6597ed8d-4bda-…` -> 65 97 ed 8d; `ffe1` -> 00 00 ff e1)."""
    return bytes.fromhex(uuid128(uuid)[:8])


@dataclass(frozen=True, slots=True)
class Char:
    uuid: str  # 128-bit, lower case
    handle: int
    properties: frozenset[str]
    service: str = ""


@dataclass(frozen=True, slots=True)
class Choice:
    notify: Char
    write: Char
    write_response: bool


def choose(chars: Iterable[Char], spec: BleSpec, who: str) -> Choice:
    service = uuid128(spec.service)
    table = [c for c in chars if c.service in ("", service)]
    notify_uuid, write_uuid = uuid128(spec.notify), uuid128(spec.write)
    notify = [c for c in table if c.uuid == notify_uuid and c.properties & NOTIFY_PROPS]
    writes = [c for c in table if c.uuid == write_uuid and c.properties & WRITE_PROPS]
    if not notify or not writes:
        have = ", ".join(f"{short(c.uuid)}@{c.handle}:{'/'.join(sorted(c.properties))}" for c in table)
        raise LinkError(f"{who}: service {service} lacks a notify {notify_uuid} or a write {write_uuid} "
                        f"characteristic (has {have or 'none'})")
    wanted = "write" if spec.write_with_response else "write-without-response"
    # Prefer the protocol's write mode, then a write characteristic that is not the notify one.
    writes.sort(key=lambda c: (wanted not in c.properties, c == notify[0], c.handle))
    write = writes[0]
    response = spec.write_with_response if wanted in write.properties else not spec.write_with_response
    return Choice(notify[0], write, response)


def find_char(chars: Iterable[Char], service: str, uuid: str, wanted: frozenset[str], who: str) -> Char:
    """The characteristic `uuid` of `service` with one of the `wanted` properties (READ / WRITE_PROPS /
    NOTIFY_PROPS); several with the same UUID (the JK layout): the lowest handle. A clear LinkError otherwise."""
    service, uuid = uuid128(service), uuid128(uuid)
    table = [c for c in chars if c.service in ("", service)]
    hits = sorted((c for c in table if c.uuid == uuid and c.properties & wanted), key=lambda c: c.handle)
    if not hits:
        have = ", ".join(f"{short(c.uuid)}@{c.handle}:{'/'.join(sorted(c.properties))}" for c in table)
        raise LinkError(f"{who}: service {short(service)} has no {'/'.join(sorted(wanted))} characteristic "
                        f"{short(uuid)} (has {have or 'none'})")
    return hits[0]


READ_PROPS = frozenset({"read"})
