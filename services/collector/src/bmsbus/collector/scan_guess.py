"""Guess bmsbus device types from one BLE advertisement (for `bmsbus scan`).

Pure: no radio, no clock. Matching is aiobmsble's own: every plugin's `matcher_dict_list()` checked by
`aiobmsble.utils.bms_supported` (local-name glob, service UUID, service data, manufacturer id and data
prefix, OUI). Matching plugins yield our native types first where bmsbus has one
(plugins.NATIVE_EQUIVALENT, e.g. jikong_bms -> "jk"), then their `<plugin>_ble` types. aiobmsble's own
tests keep its matchers unique, so a real advertisement normally matches one plugin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .protocols.aiobmsble_adapter.plugins import NATIVE_EQUIVALENT, plugin_modules, type_name


def _uuid128(uuid: str) -> str:
    from bleak.uuids import normalize_uuid_str

    return normalize_uuid_str(uuid)


def guess_types(local_name: str | None, service_uuids: Iterable[str] | str | None = None,
                manufacturer_data: Mapping[int | str, bytes | str] | None = None, address: str | None = "",
                *, service_data: Mapping[str, bytes | str] | None = None) -> list[str]:
    """bmsbus type names this advertisement may belong to, best first; [] if none.

    `manufacturer_data` keys are company ids (int or decimal string), values bytes or hex strings, as
    bleak and recorded JSON give them. `address` is the MAC (used for OUI matchers; may be "").
    """
    from aiobmsble.utils import bms_supported
    from bleak.backends.scanner import AdvertisementData

    if isinstance(service_uuids, str):
        service_uuids = [service_uuids]
    adv = AdvertisementData(
        local_name=local_name,
        manufacturer_data={int(k): bytes.fromhex(v) if isinstance(v, str) else bytes(v)
                           for k, v in (manufacturer_data or {}).items()},
        service_data={_uuid128(k): bytes.fromhex(v) if isinstance(v, str) else bytes(v)
                      for k, v in (service_data or {}).items()},
        service_uuids=[_uuid128(u) for u in service_uuids or ()],
        tx_power=None,
        rssi=-127,
        platform_data=(),
    )
    matched = [plugin for plugin, module in plugin_modules().items() if bms_supported(module.BMS, adv, address or "")]
    native = [NATIVE_EQUIVALENT[p] for p in matched if p in NATIVE_EQUIVALENT]
    return list(dict.fromkeys(native + [type_name(p) for p in matched]))
