"""BLE through ESPHome Bluetooth proxies, driven by aioesphomeapi's APIClient: the one module that touches it.

Layers:
- `Proxy`: one API connection to one proxy (plaintext or Noise PSK), kept up by `run()` with capped
  backoff, so a proxy that reboots is reconnected. It records every raw advertisement (address, RSSI,
  address type, name) and the proxy's connection slots (free / limit / allocated addresses).
- `ProxyPool`: the configured proxies, an owning async context manager (their `run()` tasks live and die
  with it). Until the collector owns a pool for its lifetime, links share one refcounted pool per proxy
  list (`shared_pool`): the first link entering starts it, the last one leaving stops it.
- `EsphomeLink(address, spec, proxies)`: finds the device in the proxies' advertisements (MAC or name),
  takes the proxy that hears it best and has (or soonest gets) a free slot, waits for a slot without ever
  exceeding the proxy's limit (our own connects in flight count until the proxy reports them), connects
  (V3), lists services, picks characteristics like the BlueZ link (gatt.choose), enables notifications
  (and writes the CCCD itself, as proxies with remote caching expect), and streams notifications into the
  queue. A device disconnect or the proxy's API connection dropping ends the link with LinkClosed.
  It is also a CharLink (links/base.py): `read_char` / `write_char` / `start_notify` by UUID on the
  protocol's service, notifications of characteristics subscribed that way tagged (`gatt.char_tag`);
  with a `GattCharsSpec` (Victron) nothing is subscribed at connect. Proxies cannot pair with a PIN: a
  device that answers "insufficient authentication/encryption" is a PairingFailed saying so.

aioesphomeapi errors leave as LinkError subclasses: TimeoutAPIError/TimeoutError -> LinkTimeout;
dropped BLE or API connection -> LinkClosed; wrong key / password -> ProxyAuthError; a GATT error
"insufficient authentication / authorization / encryption" -> PairingFailed; others -> LinkError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self
from weakref import WeakKeyDictionary

from aioesphomeapi import APIClient, APIConnectionError
from aioesphomeapi.core import (
    BluetoothConnectionDroppedError,
    BluetoothGATTAPIError,
    ConnectionNotEstablishedAPIError,
    HandshakeAPIError,
    InvalidAuthAPIError,
    ProtocolAPIError,
    SocketClosedAPIError,
    TimeoutAPIError,
)
from aioesphomeapi.model import BluetoothProxyFeature

from ..driver import BleSpec
from .base import DeviceNotFound, LinkClosed, LinkError, LinkTimeout, PairingFailed, QueueLink, is_mac
from .gatt import (
    NOTIFY_PROPS,
    READ_PROPS,
    WRITE_PROPS,
    Char,
    Choice,
    GattCharsSpec,
    char_tag,
    choose,
    find_char,
    property_names,
    short,
    uuid128,
)

log = logging.getLogger("bmsbus.collector.links.esphome")

CCCD = uuid128("2902")
STALE_SIGHTING = 120.0  # s: an advertisement older than this does not count as "hears the device"
GATT_AUTH_ERRORS = {5: "insufficient authentication", 8: "insufficient authorization", 15: "insufficient encryption"}


class ProxyAuthError(LinkError):
    """The proxy refused our key or password (or wants encryption we did not configure)."""


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """One ESPHome proxy. `noise_psk` is the base64 API encryption key from the proxy's YAML."""

    host: str
    port: int = 6053
    noise_psk: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"{self.host}:{self.port}"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ProxyConfig:
        def secret(v: Any) -> str | None:
            return v.get_secret_value() if hasattr(v, "get_secret_value") else v

        return cls(host=str(raw["host"]), port=int(raw.get("port", 6053)), noise_psk=secret(raw.get("noise_psk")),
                   password=secret(raw.get("password")), name=raw.get("name"))


def mac_to_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def int_to_mac(value: int) -> str:
    return ":".join(f"{(value >> s) & 0xFF:02X}" for s in range(40, -8, -8))


@dataclass(slots=True)
class Sighting:
    address: int
    rssi: int
    address_type: int
    seen: float
    name: str | None = None
    service_uuids: tuple[str, ...] = ()
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)


def parse_ad(data: bytes) -> tuple[str | None, tuple[str, ...], dict[int, bytes]]:
    """Local name, service UUIDs and manufacturer data from raw advertisement structures."""
    name: str | None = None
    uuids: list[str] = []
    mfr: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        size = data[i]
        if size == 0 or i + 1 + size > len(data):
            break
        kind, body = data[i + 1], bytes(data[i + 2:i + 1 + size])
        if kind in (0x08, 0x09):
            name = body.decode("utf-8", errors="replace")
        elif kind in (0x02, 0x03):
            uuids += [uuid128(f"{int.from_bytes(body[j:j + 2], 'little'):04x}") for j in range(0, len(body) - 1, 2)]
        elif kind in (0x06, 0x07):
            for j in range(0, len(body) - 15, 16):
                h = body[j:j + 16][::-1].hex()
                uuids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
        elif kind == 0xFF and len(body) >= 2:
            mfr[int.from_bytes(body[:2], "little")] = body[2:]
        i += 1 + size
    return name, tuple(uuids), mfr


@contextlib.contextmanager
def mapped(target: str, action: str) -> Iterator[None]:
    prefix = f"{target}: {action}"
    try:
        yield
    except LinkError:
        raise
    except (TimeoutAPIError, TimeoutError) as exc:
        raise LinkTimeout(f"{prefix}: timed out ({exc})" if str(exc) else f"{prefix}: timed out") from exc
    except (InvalidAuthAPIError, HandshakeAPIError) as exc:
        raise ProxyAuthError(f"{prefix}: the proxy refused us: {exc}; check noise_psk / password") from exc
    except ProtocolAPIError as exc:
        if "encrypt" in str(exc).lower():
            raise ProxyAuthError(f"{prefix}: {exc}; set noise_psk for this proxy") from exc
        raise LinkError(f"{prefix}: {exc}") from exc
    except (BluetoothConnectionDroppedError, SocketClosedAPIError, ConnectionNotEstablishedAPIError) as exc:
        raise LinkClosed(f"{prefix}: {exc}") from exc
    except BluetoothGATTAPIError as exc:
        reason = GATT_AUTH_ERRORS.get(exc.error.error)
        if reason is not None:
            raise PairingFailed(f"{prefix}: the device wants a bond ({reason}); an ESPHome proxy cannot pair with "
                                "a PIN: connect it with a local adapter and `pin:`") from exc
        raise LinkError(f"{prefix}: {exc}") from exc
    except APIConnectionError as exc:
        raise LinkError(f"{prefix}: {exc}") from exc
    except (ConnectionError, OSError) as exc:
        raise LinkClosed(f"{prefix}: {type(exc).__name__}: {exc}") from exc


class Proxy:
    """One ESPHome proxy: its API connection, what it hears, and its connection slots."""

    def __init__(self, cfg: ProxyConfig, *, reconnect_delay: tuple[float, float] = (1.0, 30.0),
                 connect_timeout: float = 15.0) -> None:
        self.cfg = cfg
        self.reconnect_delay = reconnect_delay
        self.connect_timeout = connect_timeout
        self.client: APIClient | None = None
        self.feature_flags = 0
        self.free = 0
        self.limit = 0
        self.allocated: set[int] = set()
        self.sightings: dict[int, Sighting] = {}
        self.reserved: set[int] = set()  # addresses our links are connecting to or hold
        self.links: set[EsphomeLink] = set()
        self.connections = 0  # API sessions established (reconnects show here)
        self.last_error: str | None = None
        self.auth_failed: ProxyAuthError | None = None  # set while the proxy refuses our credentials
        self.listeners: list[Any] = []  # called (sync) on every change: the pool wakes its waiters
        self._changed = asyncio.Event()
        self.connect_lock = asyncio.Lock()  # one connection attempt at a time per proxy, like HA's habluetooth

    def __repr__(self) -> str:
        return f"Proxy({self.cfg.label})"

    @property
    def connected(self) -> bool:
        return self.client is not None

    def available(self) -> int:
        """Slots we may still take: the proxy's free count minus our connects it has not counted yet."""
        if self.client is None:
            return 0
        unreflected = len(self.reserved - self.allocated)
        return self.free - unreflected

    def heard(self, address: int) -> Sighting | None:
        s = self.sightings.get(address)
        return s if s is not None and time.monotonic() - s.seen < STALE_SIGHTING else None

    def find_name(self, name: str) -> Sighting | None:
        now = time.monotonic()
        best = [s for s in self.sightings.values() if s.name == name and now - s.seen < STALE_SIGHTING]
        return max(best, key=lambda s: s.seen) if best else None

    def _kick(self) -> None:
        """Something changed (adverts, slots, connection): wake everyone waiting on this proxy."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        for listener in self.listeners:
            listener()

    async def wait_until(self, predicate: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    def _on_raw(self, resp: Any) -> None:
        now = time.monotonic()
        for adv in resp.advertisements:
            name, uuids, mfr = parse_ad(adv.data)
            old = self.sightings.get(adv.address)
            self.sightings[adv.address] = Sighting(
                adv.address, adv.rssi, adv.address_type, now, name or (old.name if old else None),
                uuids or (old.service_uuids if old else ()), mfr or (old.manufacturer_data if old else {}))
        self._kick()

    def _on_free(self, free: int, limit: int, allocated: list[int]) -> None:
        self.free, self.limit, self.allocated = free, limit, set(allocated)
        self._kick()

    @contextlib.asynccontextmanager
    async def slot(self, address: int, timeout: float) -> AsyncIterator[None]:
        """Hold one of this proxy's connection slots for `address` (waits for one to free up)."""
        try:
            await self.wait_until(lambda: self.connected and self.available() > 0, timeout)
            self.reserved.add(address)  # no await since the check: nobody else can take it in between
        except TimeoutError as exc:
            raise LinkTimeout(f"no free connection slot on proxy {self.cfg.label} within {timeout:.0f} s "
                              f"(limit {self.limit}, in use by {sorted(int_to_mac(a) for a in self.allocated)})"
                              ) from exc
        try:
            yield
        finally:
            self.reserved.discard(address)
            self._kick()

    async def run(self) -> None:
        """Keep the API connection up for as long as the pool lives."""
        failures = 0
        while True:
            stopped = asyncio.Event()
            client = APIClient(self.cfg.host, self.cfg.port, self.cfg.password or "", noise_psk=self.cfg.noise_psk,
                               client_info="bmsbus-collector")

            async def on_stop(expected: bool, stopped: asyncio.Event = stopped) -> None:
                stopped.set()

            try:
                with mapped(f"proxy {self.cfg.label}", "connect"):
                    async with asyncio.timeout(self.connect_timeout):
                        await client.connect(on_stop=on_stop, login=True)
                        info = await client.device_info()
                self.feature_flags = info.bluetooth_proxy_feature_flags_compat(client.api_version)
                if not self.feature_flags & BluetoothProxyFeature.ACTIVE_CONNECTIONS:
                    raise LinkError(f"proxy {self.cfg.label} ({info.name}) is a passive proxy: set "
                                    "`bluetooth_proxy: active: true` in its ESPHome config")
                if self.feature_flags & BluetoothProxyFeature.RAW_ADVERTISEMENTS:
                    client.subscribe_bluetooth_le_raw_advertisements(self._on_raw)
                else:
                    client.subscribe_bluetooth_le_advertisements(self._on_parsed)
                client.subscribe_bluetooth_connections_free(self._on_free)
                self.client = client
                self.connections += 1
                failures = 0
                self.last_error = None
                self.auth_failed = None
                log.info("proxy %s (%s, esphome %s) connected", self.cfg.label, info.name, info.esphome_version)
                self._kick()
                await stopped.wait()
                log.warning("proxy %s: API connection lost", self.cfg.label)
            except LinkError as exc:
                failures += 1
                self.last_error = str(exc)
                self.auth_failed = exc if isinstance(exc, ProxyAuthError) else None
                (log.warning if failures <= 3 else log.debug)("%s", exc)
            except Exception as exc:  # noqa: BLE001 - this loop must outlive any one bad session; logged in full
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("proxy %s: unexpected error", self.cfg.label)
            finally:
                self.client = None
                self.free, self.allocated = 0, set()
                for link in list(self.links):
                    link._lost(f"proxy {self.cfg.label} connection lost")
                self._kick()
                with contextlib.suppress(APIConnectionError, OSError, TimeoutError):
                    async with asyncio.timeout(2):
                        await client.disconnect(force=True)
            first, cap = self.reconnect_delay
            delay = min(cap, first * 1.8 ** max(0, failures - 1))
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    def _on_parsed(self, adv: Any) -> None:
        """Older proxies without raw advertisements."""
        old = self.sightings.get(adv.address)
        self.sightings[adv.address] = Sighting(adv.address, adv.rssi, adv.address_type, time.monotonic(),
                                               adv.name or (old.name if old else None),
                                               tuple(uuid128(u) for u in adv.service_uuids),
                                               {int(k): bytes(v) for k, v in adv.manufacturer_data.items()})
        self._kick()


class ProxyPool:
    """The configured proxies; `async with` keeps their connections up."""

    def __init__(self, configs: Sequence[ProxyConfig], **proxy_kw: Any) -> None:
        if not configs:
            raise LinkError("no ESPHome proxies configured")
        self.proxies = [Proxy(c, **proxy_kw) for c in configs]
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        for p in self.proxies:
            p.listeners.append(self._kick)

    def _kick(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(p.run(), name=f"esphome-proxy:{p.cfg.label}") for p in self.proxies]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    def by_name(self, name: str) -> Proxy:
        for p in self.proxies:
            if name in (p.cfg.name, p.cfg.host, p.cfg.label):
                return p
        raise LinkError(f"no proxy named {name!r}; have {[p.cfg.label for p in self.proxies]}")

    async def locate(self, address: str, timeout: float, *, only: str | None = None,
                     settle: float = 0.6) -> list[tuple[Proxy, Sighting]]:
        """Proxies that hear `address` (MAC or advertised name), best RSSI first. Waits up to `timeout`
        for a first sighting, then `settle` s more so every proxy's advertisements can come in."""
        proxies = [self.by_name(only)] if only else self.proxies

        def hits() -> list[tuple[Proxy, Sighting]]:
            out = []
            for p in proxies:
                if not p.connected:
                    continue
                s = p.heard(mac_to_int(address)) if is_mac(address) else p.find_name(address)
                if s is not None:
                    out.append((p, s))
            return sorted(out, key=lambda ps: -ps[1].rssi)

        deadline = time.monotonic() + timeout
        while not hits():
            refused = [p.auth_failed for p in proxies if p.auth_failed is not None]
            if len(refused) == len(proxies):
                raise ProxyAuthError(f"{address}: every proxy refused us: {refused[0]}")
            left = deadline - time.monotonic()
            if left <= 0:
                down = [f"{p.cfg.label}: {p.last_error or 'connecting'}" for p in proxies if not p.connected]
                raise DeviceNotFound(f"{address}: no proxy heard it within {timeout:.0f} s"
                                     + (f" (proxies not connected: {'; '.join(down)})" if down else ""))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()
        await asyncio.sleep(min(settle, max(0.0, deadline - time.monotonic())))
        return hits()


# --- pools shared by links until the collector owns one -------------------------------------------

_pools: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[ProxyConfig, ...], list[Any]]] = WeakKeyDictionary()


async def acquire_pool(configs: Sequence[ProxyConfig]) -> ProxyPool:
    key = tuple(configs)
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    if key in pools:
        pools[key][1] += 1
        return pools[key][0]
    pool = ProxyPool(configs)
    pools[key] = [pool, 1]
    await pool.__aenter__()
    return pool


async def release_pool(pool: ProxyPool) -> None:
    pools = _pools.get(asyncio.get_running_loop(), {})
    for key, entry in list(pools.items()):
        if entry[0] is pool:
            entry[1] -= 1
            if entry[1] == 0:
                del pools[key]
                await pool.__aexit__(None, None, None)
            return


@contextlib.asynccontextmanager
async def shared_pool(configs: Sequence[ProxyConfig]) -> AsyncIterator[ProxyPool]:
    """The pool for these proxies: the collector's long-lived one if it registered it, else refcounted."""
    pool = await acquire_pool(configs)
    try:
        yield pool
    finally:
        await release_pool(pool)


@contextlib.asynccontextmanager
async def hold_pool(configs: Sequence[ProxyConfig]) -> AsyncIterator[ProxyPool]:
    """For the collector: keep the proxies connected for its whole run, so links (and `keep_alive: false`
    devices connecting once per sample) never wait for an API handshake or fresh advertisements."""
    async with shared_pool(configs) as pool:
        yield pool


# --- the link --------------------------------------------------------------------------------------

class EsphomeLink(QueueLink):
    kind = "esphome"

    def __init__(self, address: str, spec: BleSpec, proxies: Sequence[ProxyConfig], *, proxy: str | None = None,
                 name: str | None = None, scan_timeout: float = 15.0, slot_timeout: float = 60.0,
                 connect_timeout: float = 30.0, io_timeout: float = 10.0, log: logging.Logger | None = None) -> None:
        super().__init__()
        self.address = address
        self.spec = spec
        self.proxy_configs = tuple(proxies)
        self.only = proxy
        self.name = name or address
        self.scan_timeout = scan_timeout
        self.slot_timeout = slot_timeout
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.log = log or globals()["log"]
        self.proxy: Proxy | None = None
        self.mac: str | None = None
        self.choice: Choice | None = None
        self.table: list[Char] = []  # the device's characteristics, for the CharLink methods
        self.cccd: dict[int, int] = {}  # characteristic handle -> its CCCD descriptor handle
        self.notifying: dict[int, str] = {}  # handle -> uuid, everything we subscribed
        self.mtu = 23
        self.connect_seconds: float | None = None
        self._pool: ProxyPool | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._connected = False

    def __repr__(self) -> str:
        return f"EsphomeLink({self.address!r}, proxy={self.proxy and self.proxy.cfg.label!r})"

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise LinkError(f"{self.name}: link entered twice")
        self._open_stream()
        self._connected = False
        self.notifying = {}
        started = time.monotonic()
        stack = self._stack = contextlib.AsyncExitStack()
        try:
            self._pool = await stack.enter_async_context(shared_pool(self.proxy_configs))
            candidates = await self._pool.locate(self.address, self.scan_timeout, only=self.only)
            proxy, sighting = await self._pick(candidates)
            self.proxy, self.rssi, self.mac = proxy, sighting.rssi, int_to_mac(sighting.address)
            await stack.enter_async_context(proxy.slot(sighting.address, self.slot_timeout))
            proxy.links.add(self)
            stack.callback(proxy.links.discard, self)
            stack.push_async_callback(self._disconnect, proxy, sighting.address)
            with mapped(f"{self.name} via {proxy.cfg.label}", "connect"):
                async with asyncio.timeout(self.connect_timeout), proxy.connect_lock:
                    await self._connect(proxy, sighting)
        except BaseException:
            self._stack = None
            self._lost("closed")
            await stack.aclose()
            raise
        self.connect_seconds = time.monotonic() - started
        self.log.debug("%s connected via %s (rssi %s) in %.2f s", self.name, proxy.cfg.label, self.rssi,
                       self.connect_seconds)
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        self._lost("closed by us")
        if stack is not None:
            await stack.aclose()

    async def _pick(self, candidates: list[tuple[Proxy, Sighting]]) -> tuple[Proxy, Sighting]:
        """Best RSSI with a slot free now; if every proxy that hears it is full, wait on the best one."""
        for proxy, sighting in candidates:
            if proxy.available() > 0:
                return proxy, sighting
        self.log.info("%s: every proxy that hears it is out of connection slots; waiting on %s", self.name,
                      candidates[0][0].cfg.label)
        return candidates[0]

    async def _connect(self, proxy: Proxy, sighting: Sighting) -> None:
        client = proxy.client
        if client is None:
            raise LinkClosed(f"proxy {proxy.cfg.label} is not connected")
        address = sighting.address
        errors: list[int] = []

        def on_state(connected: bool, mtu: int, error: int) -> None:
            if connected:
                self._connected, self.mtu = True, mtu or 23
                return
            errors.append(error)
            if self._connected:
                self._connected = False
                self._lost(f"device disconnected (proxy {proxy.cfg.label}, error {error:#x})")

        self._cancel_state = await client.bluetooth_device_connect(
            address, on_state, timeout=max(5.0, self.connect_timeout - 5),  # its own timeout cleans up first
            feature_flags=proxy.feature_flags, has_cache=False, address_type=sighting.address_type)
        if not self._connected:
            error = errors[-1] if errors else 0
            raise LinkError(f"proxy {proxy.cfg.label} could not connect to {self.mac}: error {error:#x}"
                            + (" (out of connection slots)" if error == 0x80 else ""))
        services = await client.bluetooth_gatt_get_services(address)
        table: list[Char] = []
        cccd: dict[int, int] = {}
        for service in services.services:
            for c in service.characteristics:
                table.append(Char(uuid128(c.uuid), c.handle, property_names(c.properties), uuid128(service.uuid)))
                for d in c.descriptors:
                    if uuid128(d.uuid) == CCCD:
                        cccd[c.handle] = d.handle
        self.choice = choice = choose(table, self.spec, self.name)
        self.table, self.cccd = table, cccd
        if not isinstance(self.spec, GattCharsSpec):
            await self._subscribe(client, proxy, address, choice.notify, self._on_notify)

    async def _subscribe(self, client: APIClient, proxy: Proxy, address: int, char: Char, callback: Any) -> None:
        await client.bluetooth_gatt_start_notify(address, char.handle, callback)
        self.notifying[char.handle] = char.uuid
        if proxy.feature_flags & BluetoothProxyFeature.REMOTE_CACHING:
            # The proxy no longer resolves descriptors itself; enabling the CCCD is our job.
            if char.handle not in self.cccd:
                raise LinkError(f"{self.name}: notify characteristic {char.handle} has no CCCD")
            value = b"\x01\x00" if "notify" in char.properties else b"\x02\x00"
            await client.bluetooth_gatt_write_descriptor(address, self.cccd[char.handle], value)

    async def _disconnect(self, proxy: Proxy, address: int) -> None:
        cancel = getattr(self, "_cancel_state", None)
        self._cancel_state = None
        client = proxy.client
        was_connected, self._connected = self._connected, False
        if client is not None and was_connected:
            with contextlib.suppress(APIConnectionError, TimeoutError, OSError):
                for handle in list(self.notifying):
                    client.bluetooth_gatt_stop_notify(address, handle)
                async with asyncio.timeout(5):
                    await client.bluetooth_device_disconnect(address, timeout=5)
        if cancel is not None:
            with contextlib.suppress(Exception):  # the subscription may be gone with the API connection
                cancel()

    def _on_notify(self, _handle: int, data: bytearray) -> None:
        self._deliver(bytes(data))

    async def send(self, data: bytes) -> None:
        if self._closed is not None:
            raise LinkClosed(self._closed)
        proxy, choice = self.proxy, self.choice
        client = proxy.client if proxy is not None else None
        if client is None or choice is None or self.mac is None:
            raise LinkClosed(f"{self.name}: not connected")
        step = len(data) if choice.write_response else max(20, self.mtu - 3)
        with mapped(f"{self.name} via {proxy.cfg.label}", "write"):  # type: ignore[union-attr]
            async with asyncio.timeout(self.io_timeout):
                for i in range(0, len(data), step or 1):
                    await client.bluetooth_gatt_write(mac_to_int(self.mac), choice.write.handle, data[i:i + step],
                                                      choice.write_response, timeout=self.io_timeout)

    # -- CharLink --------------------------------------------------------------------------------------

    def _char(self, uuid: str, wanted: frozenset[str]) -> tuple[APIClient, Proxy, int, Char]:
        if self._closed is not None:
            raise LinkClosed(self._closed)
        proxy = self.proxy
        client = proxy.client if proxy is not None else None
        if proxy is None or client is None or self.mac is None or not self._connected:
            raise LinkClosed(f"{self.name}: not connected")
        return client, proxy, mac_to_int(self.mac), find_char(self.table, self.spec.service, uuid, wanted, self.name)

    def _where(self, action: str, char: Char) -> str:
        return f"{self.name} via {self.proxy.cfg.label if self.proxy else '?'}: {action} {short(char.uuid)}"

    async def read_char(self, uuid: str) -> bytes:
        client, _proxy, address, char = self._char(uuid, READ_PROPS)
        with mapped(self._where("read", char), "gatt"):
            async with asyncio.timeout(self.io_timeout + 1):
                return bytes(await client.bluetooth_gatt_read(address, char.handle, timeout=self.io_timeout))

    async def write_char(self, uuid: str, data: bytes, *, response: bool = False) -> None:
        client, _proxy, address, char = self._char(uuid, WRITE_PROPS)
        if ("write" if response else "write-without-response") not in char.properties:
            response = not response  # the only mode this characteristic offers
        with mapped(self._where("write", char), "gatt"):
            async with asyncio.timeout(self.io_timeout + 1):
                await client.bluetooth_gatt_write(address, char.handle, bytes(data), response, timeout=self.io_timeout)

    async def start_notify(self, uuid: str) -> None:
        client, proxy, address, char = self._char(uuid, NOTIFY_PROPS)
        if char.handle in self.notifying:
            if self.choice is not None and char.handle == self.choice.notify.handle \
                    and not isinstance(self.spec, GattCharsSpec):
                raise LinkError(f"{self.name}: {short(char.uuid)} is this link's stream characteristic (already "
                                "subscribed, untagged)")
            return
        tag = char_tag(char.uuid)

        def on_notify(_handle: int, data: bytearray) -> None:
            self._deliver(tag + bytes(data))

        with mapped(self._where("subscribe", char), "gatt"):
            async with asyncio.timeout(self.io_timeout + 1):
                await self._subscribe(client, proxy, address, char, on_notify)


async def scan(proxies: Sequence[ProxyConfig], timeout: float = 5.0) -> list[tuple[Proxy, Sighting]]:
    """Everything the proxies hear within `timeout` s: (proxy, sighting), strongest first per address."""
    async with shared_pool(proxies) as pool:
        await asyncio.sleep(timeout)
        best: dict[int, tuple[Proxy, Sighting]] = {}
        for p in pool.proxies:
            for s in p.sightings.values():
                if s.address not in best or s.rssi > best[s.address][1].rssi:
                    best[s.address] = (p, s)
    return sorted(best.values(), key=lambda ps: -ps[1].rssi)
