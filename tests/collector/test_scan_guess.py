"""`bmsbus scan` type guess: every recorded advertisement gives the family it is labelled with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bmsbus.collector.protocols.aiobmsble_adapter import NATIVE_EQUIVALENT, available_types, type_name
from bmsbus.collector.scan_guess import guess_types

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "aiobmsble-advertisements.json"
ENTRIES: list[dict[str, Any]] = json.loads(VECTORS.read_text())

# The native types bmsbus has; NATIVE_EQUIVALENT may only point at these.
NATIVE_TYPES = {"jk", "daly", "daly2", "jbd", "ant", "supervolt", "sok", "litime", "victron", "noname_modbus", "basen"}


def our_name(plugin: str | None) -> str | None:
    if plugin is None:
        return None
    return NATIVE_EQUIVALENT.get(plugin, type_name(plugin))


def guess(adv: dict[str, Any]) -> list[str]:
    platform = adv.get("platform_data") or []
    address = platform[0] if platform and isinstance(platform[0], str) else ""
    return guess_types(adv.get("local_name"), adv.get("service_uuids"), adv.get("manufacturer_data"), address,
                       service_data=adv.get("service_data"))


def _id(entry: dict[str, Any]) -> str:
    return f"{entry['expected_bms'] or 'none'}:{entry['advertisement'].get('local_name')}"


@pytest.mark.parametrize("entry", ENTRIES, ids=[_id(e) for e in ENTRIES])
def test_recorded_advertisement_gives_its_family(entry: dict[str, Any]) -> None:
    got = guess(entry["advertisement"])
    expected = our_name(entry["expected_bms"])
    if expected is None:
        assert got == [], entry["ignore_reason"]
        return
    assert got[:1] == [expected]
    # exactly one aiobmsble family: the native type (if any) and that family's _ble type, nothing else
    assert got == list(dict.fromkeys([expected, type_name(entry["expected_bms"])]))


def test_hit_rate_is_complete() -> None:
    hits = sum(
        (guess(e["advertisement"])[:1] or [None])[0] == our_name(e["expected_bms"]) for e in ENTRIES
    )
    print(f"scan guess hit rate: {hits}/{len(ENTRIES)}")
    assert hits == len(ENTRIES)


def test_native_equivalents_are_native_types_and_known_plugins() -> None:
    assert set(NATIVE_EQUIVALENT.values()) <= NATIVE_TYPES
    assert {type_name(p) for p in NATIVE_EQUIVALENT} <= set(available_types())


def test_input_shapes() -> None:
    # bleak gives int company ids and bytes; recorded JSON gives strings and hex; 16-bit UUIDs are expanded
    sok = guess_types("SOK-24V1127", ["fff0"], None, None)
    assert sok == ["sok", "abc_ble"]
    assert guess_types("SOK-24V1127", "0000fff0-0000-1000-8000-00805f9b34fb") == sok
    assert guess_types(None) == []
    assert guess_types("nothing we know", ["180f"], {0xFFFF: b"\x00"}, "00:11:22:33:44:55") == []
