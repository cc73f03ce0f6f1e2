"""Which aiobmsble plugins exist, and what bmsbus calls them.

Discovery goes through aiobmsble's own loader (`aiobmsble.utils.load_bms_plugins`): every module
`aiobmsble/bms/<name>_bms.py` with a `BMS` class is a plugin, and becomes the bmsbus type `<name>_ble`.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Final

PLUGIN_SUFFIX: Final = "_bms"
TYPE_SUFFIX: Final = "_ble"

# Plugins that are not devices: aiobmsble's template for new plugins.
EXCLUDED: Final[dict[str, str]] = {"dummy_bms": "aiobmsble's template for new plugins, not a device"}

# aiobmsble plugins that speak a protocol bmsbus also has natively (docs/reference protocols.md):
# `bmsbus scan` proposes the native type first.
NATIVE_EQUIVALENT: Final[dict[str, str]] = {
    "jikong_bms": "jk",  # JK02 over BLE
    "daly_bms": "daly2",  # Daly BLE Modbus (0xD2)
    "jbd_bms": "jbd",
    "ant_bms": "ant",  # ANT 7E A1 (the legacy protocol is ant_leg_bms, no native driver)
    "abc_bms": "sok",  # SOK / ABC-BMS (EE C1/C2/C4)
    "redodo_bms": "litime",  # LiTime / Redodo / Power Queen
    "ej_bms": "supervolt",  # Supervolt / E&J ASCII protocol
}


def type_name(plugin: str) -> str:
    """`seplos_bms` (module name, with or without the package prefix) -> `seplos_ble`."""
    base = plugin.rsplit(".", 1)[-1]
    if not base.endswith(PLUGIN_SUFFIX):
        raise ValueError(f"{plugin!r} is not an aiobmsble plugin module name")
    return base[: -len(PLUGIN_SUFFIX)] + TYPE_SUFFIX


def plugin_name(type_: str) -> str:
    """`seplos_ble` -> `seplos_bms`."""
    if not type_.endswith(TYPE_SUFFIX):
        raise ValueError(f"{type_!r} is not an aiobmsble device type")
    return type_[: -len(TYPE_SUFFIX)] + PLUGIN_SUFFIX


@cache
def plugin_modules() -> dict[str, ModuleType]:
    """{plugin module name: module}, sorted, as aiobmsble's own loader finds them (minus EXCLUDED)."""
    from aiobmsble.utils import load_bms_plugins

    found = {m.__name__.rsplit(".", 1)[-1]: m for m in load_bms_plugins()}
    return {name: found[name] for name in sorted(found) if name not in EXCLUDED}


def available_types() -> list[str]:
    """Every `<plugin>_ble` type, sorted."""
    return [type_name(name) for name in plugin_modules()]


def types_table_markdown() -> str:
    """The docs table of every aiobmsble type (docs/bms/aiobmsble.md embeds it; a test keeps it current)."""
    rows = ["| type | aiobmsble plugin | manufacturer and model | native bmsbus type |", "|---|---|---|---|"]
    for plugin, module in plugin_modules().items():
        info = module.BMS.INFO
        native = NATIVE_EQUIVALENT.get(plugin)
        rows.append(f"| `{type_name(plugin)}` | `{plugin}` | {info.get('manufacturer', '?')} {info.get('model', '?')} "
                    f"| {f'`{native}`' if native else '–'} |")
    return "\n".join(rows)
