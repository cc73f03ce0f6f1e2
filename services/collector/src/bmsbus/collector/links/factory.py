"""Chooses and builds the real transport for a configured device: BlueZ BLE, an ESPHome proxy, or serial.

Routing is data (httpx mounts style), decided from the device config and what the protocol supports:

- `transport:` `ble`, `esphome` or `serial` forces one; `auto` (default) decides from the address.
- serial when the address is a path or URL (`/dev/...`, `COM3`, `socket://`, `rfc2217://`), or
  batmon-ha's `address: serial` with the port in `adapter:`, or when the protocol has no BLE side.
- otherwise BLE on the host's BlueZ (`adapter:` hciN or controller MAC; `pin:` for passkey devices).
- `esphome`: through the proxies of `collector.esphome_proxies` (`proxy:` pins one by name).
- aiobmsble-backed types (`<plugin>_ble`, `entry.driver.owns_transport`) bring their own link.

Links are only built here; nothing connects until the caller enters them. `config_problems` runs the same
decisions without building anything, for `bmsbus config check`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bmsbus.shared.config import DeviceConfig

from ..driver import ProtocolEntry, SerialSpec
from .base import Link, LinkError

SERIAL_ADDRESS = re.compile(r"^(/dev/|COM\d+$|\\\\\.\\COM|socket://|rfc2217://|loop://)", re.IGNORECASE)
SERIAL_OPTIONS = {"baudrate": int, "bytesize": int, "parity": str, "stopbits": int}


def serial_port(dev: DeviceConfig) -> str | None:
    address = dev.address or ""
    if SERIAL_ADDRESS.match(address):
        return address
    if address.lower() == "serial":
        if not dev.adapter:
            raise LinkError(f"{dev.name}: `address: serial` needs the port in `adapter:` (e.g. "
                            "/dev/serial/by-id/usb-FTDI_...)")
        return dev.adapter
    return None


def choose_transport(dev: DeviceConfig, entry: ProtocolEntry) -> str:
    wanted: str = dev.transport
    port = serial_port(dev)
    if wanted == "auto":
        wanted = "serial" if port or entry.ble is None else "ble"
    if wanted == "serial" and entry.serial is None:
        raise LinkError(f"{dev.name}: {entry.name} is a BLE protocol; it cannot run over a serial port "
                        f"({dev.address!r})")
    if wanted in ("ble", "esphome") and entry.ble is None:
        raise LinkError(f"{dev.name}: {entry.name} has no BLE side; give a serial port as its address")
    if wanted == "serial" and port is None:
        raise LinkError(f"{dev.name}: {entry.name} needs a serial port as address (/dev/serial/by-id/..., "
                        f"COM3, socket://host:port); got {dev.address!r}")
    return wanted


def serial_spec(dev: DeviceConfig, spec: SerialSpec) -> SerialSpec:
    """The protocol's line settings with per-device overrides from options (baudrate, parity, ...)."""
    changes = {k: conv(dev.options[k]) for k, conv in SERIAL_OPTIONS.items() if k in dev.options}
    return dataclasses.replace(spec, **changes) if changes else spec


def proxy_configs(configured: Sequence[Any]) -> list[Any]:
    """`collector.esphome_proxies` entries (config models or mappings) as the links' ProxyConfig values.
    Equal configs make equal tuples, so every link finds the one pool the collector holds open."""
    from .esphome import ProxyConfig

    return [p if isinstance(p, ProxyConfig) else ProxyConfig.from_mapping(
        p if isinstance(p, Mapping) else p.model_dump()) for p in configured]


def proxies_for(dev: DeviceConfig, configured: Sequence[Any] | None) -> list[Any]:
    out = proxy_configs(configured or [])
    if not out:
        raise LinkError(f"{dev.name}: transport esphome but no ESPHome proxies are configured "
                        "(collector.esphome_proxies: [{host, port, noise_psk, name}])")
    return out


def _labels(proxy: Any) -> tuple[str, ...]:
    """Every name `proxy:` may use for one configured proxy (as ProxyPool.by_name accepts them)."""
    get = proxy.get if isinstance(proxy, Mapping) else lambda k, d=None: getattr(proxy, k, d)
    host, port, name = get("host"), get("port", 6053) or 6053, get("name")
    return tuple(str(x) for x in (name, host, f"{host}:{port}") if x)


def _without_name(dev: DeviceConfig, exc: LinkError) -> str:
    text, prefix = str(exc), f"{dev.name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def config_problems(dev: DeviceConfig, entry: ProtocolEntry, proxies: Sequence[Any] = ()) -> list[tuple[str, str]]:
    """Why this device's link could never be built, as (device field, what is wrong / allowed) pairs; the same
    decisions as open_link, without building or importing any transport."""
    forced = dev.transport
    if getattr(entry.driver, "owns_transport", False):
        if forced not in ("auto", "ble"):
            return [("transport", f"{entry.name} uses its own BLE connection on this host; allowed: auto, ble")]
        return [] if dev.address else [("address", f"a {entry.name} device needs an address (BLE MAC or name)")]
    try:
        serial_port(dev)
    except LinkError as exc:
        return [("adapter", _without_name(dev, exc))]
    try:
        transport = choose_transport(dev, entry)
    except LinkError as exc:
        return [("transport" if forced != "auto" else "address", _without_name(dev, exc))]
    problems: list[tuple[str, str]] = []
    if transport != "serial" and not dev.address:
        problems.append(("address", f"a {entry.name} device needs an address (BLE MAC or advertised name)"))
    proxy = dev.proxy
    if transport == "esphome":
        configured = list(proxies)
        if not configured:
            problems.append(("transport", "esphome needs at least one proxy in collector.esphome_proxies "
                                          "(none configured)"))
        elif proxy is not None and not any(proxy in _labels(p) for p in configured):
            allowed = ", ".join(dict.fromkeys(_labels(p)[0] for p in configured))
            problems.append(("proxy", f"no ESPHome proxy named {proxy!r}; allowed: {allowed}"))
        if dev.pin is not None:
            problems.append(("pin", "pairing with a PIN through an ESPHome proxy is not supported; "
                                    "use a local adapter (transport: ble) for this device"))
    elif proxy is not None:
        problems.append(("proxy", f"only used with transport: esphome (this device uses {transport})"))
    return problems


def open_link(dev: DeviceConfig, entry: ProtocolEntry, *, proxies: Sequence[Any] | None = None,
              log: logging.Logger | None = None) -> Link:
    log = log or logging.getLogger(f"bmsbus.collector.{dev.id}")
    if getattr(entry.driver, "owns_transport", False):
        # aiobmsble-backed types drive their own BleakClient (protocols/aiobmsble_adapter).
        from ..driver import DriverOptions

        if not dev.address:
            raise LinkError(f"{dev.name}: a {entry.name} device needs an address (BLE MAC or advertised name)")
        options = dict(dev.options)
        if dev.pin is not None:
            options.setdefault("pin", dev.pin)
        make_link = entry.driver.make_link  # type: ignore[attr-defined]
        return make_link(dev.address, DriverOptions(options=options))  # type: ignore[no-any-return]
    transport = choose_transport(dev, entry)
    if transport == "serial":
        from .serial import SerialLink

        assert entry.serial is not None
        return SerialLink(serial_port(dev) or "", serial_spec(dev, entry.serial), name=dev.name, log=log)
    assert entry.ble is not None
    if not dev.address:
        raise LinkError(f"{dev.name}: a {entry.name} device needs an address (BLE MAC or advertised name)")
    pin = dev.pin.get_secret_value() if dev.pin is not None else None
    if transport == "esphome":
        from .esphome import EsphomeLink

        if pin:
            raise LinkError(f"{dev.name}: pairing with a PIN through an ESPHome proxy is not supported; "
                            "connect this device with a local adapter")
        return EsphomeLink(dev.address, entry.ble, proxies_for(dev, proxies), proxy=dev.proxy,
                           name=dev.name, log=log)
    from .ble import BleLink

    return BleLink(dev.address, entry.ble, adapter=dev.adapter, pin=pin, name=dev.name, log=log)
