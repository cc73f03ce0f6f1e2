"""The protocol registry: an explicit tuple of every family's ProtocolEntry values.

Adding a family = adding a package under protocols/ that exports `PROTOCOLS` and listing it here;
tests/collector/test_registry.py checks that every package in this folder is listed.
"""

from __future__ import annotations

from ..driver import ProtocolEntry
from . import jk
from . import basen, litime, noname_modbus, pace, sok, supervolt, victron
from . import ant, daly, jbd
from . import aiobmsble_adapter


# each family package adds itself here
FAMILIES: tuple = (jk, supervolt, sok, litime, victron, noname_modbus, basen, pace, daly, jbd, ant, aiobmsble_adapter)

REGISTRY: dict[str, ProtocolEntry] = {}
for _family in FAMILIES:
    for _entry in _family.PROTOCOLS:
        if _entry.name in REGISTRY:
            raise RuntimeError(f"protocol {_entry.name!r} registered twice")
        REGISTRY[_entry.name] = _entry


def get(name: str) -> ProtocolEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown BMS type {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
