"""Every aiobmsble plugin as a read-only bmsbus device type `<plugin>_ble` (e.g. `seplos_ble`).

aiobmsble (https://pypi.org/p/aiobmsble) reads ~50 BLE BMS families. It drives its own BleakClient, so
these types do not run on our byte-level Link; they follow a small contract instead, which the
collector recognises by `entry.driver.owns_transport is True`:

    class ExternalDriver(Driver):              # here: AiobmsbleDriver, one subclass per plugin
        owns_transport: ClassVar[bool] = True
        @classmethod
        def make_link(cls, target: BLEDevice | str, options: DriverOptions | None) -> Link: ...

    link = entry.driver.make_link(address_or_bledevice, options)   # instead of a bleak byte link
    async with link:                       # resolves the address afresh, creates the plugin object
        driver = entry.driver(link, options)
        info = await driver.open()         # DeviceInfo
        reading = await driver.read()      # canonical Reading, via map_sample()
    # leaving the block disconnects; errors arrive as LinkError / LinkTimeout / CodecError

Everything else about them is ordinary: ProtocolEntry in REGISTRY, `quantities`, no writable switches
(`set_switch` raises UsageError). `ble`/`serial` are None on purpose: no byte link can be opened for them.
The value mapping is the data table in mapping.py (`map_sample`, pure and separately testable).
"""

from __future__ import annotations

from ...driver import ProtocolEntry
from .driver import AiobmsbleDriver, AiobmsbleLink, driver_class
from .mapping import FIELD_MAP, UNMAPPED, FieldMap, map_sample, mapped_targets
from .plugins import EXCLUDED, NATIVE_EQUIVALENT, available_types, plugin_modules, plugin_name, type_name

FAMILY = "aiobmsble"


def _entry(plugin: str) -> ProtocolEntry:
    info = plugin_modules()[plugin].BMS.INFO
    return ProtocolEntry(
        name=type_name(plugin),
        family=FAMILY,
        description=f"{info.get('manufacturer', '?')} {info.get('model', '?')} via aiobmsble {plugin} (read-only)",
        driver=driver_class(plugin),
    )


PROTOCOLS: tuple[ProtocolEntry, ...] = tuple(_entry(plugin) for plugin in plugin_modules())

__all__ = [
    "EXCLUDED", "FAMILY", "FIELD_MAP", "NATIVE_EQUIVALENT", "PROTOCOLS", "UNMAPPED", "AiobmsbleDriver",
    "AiobmsbleLink", "FieldMap", "available_types", "driver_class", "map_sample", "mapped_targets",
    "plugin_modules", "plugin_name", "type_name",
]
