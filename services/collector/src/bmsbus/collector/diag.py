"""Field diagnostics for bug reports: `bmsbus scan`, `bmsbus snoop`, raw capture and `bmsbus replay`.

- `bmsbus scan [--timeout 5] [--adapter hci0] [--esphome HOST[:PORT] --noise-psk KEY] [--json]`: every BLE
  device advertising nearby (or heard by the proxies): RSSI, address, name, and the bmsbus types it may be
  (scan_guess.guess_types, when that module is installed).
- `bmsbus snoop ADDRESS [--adapter hci0] [--seconds 20] [--probe] [--capture DIR]`: connects through the
  host's BlueZ, prints the GATT tree (services, characteristics with handles and properties, descriptors,
  readable values), subscribes to every notify/indicate characteristic and logs each notification as
  hex + ASCII with a timestamp. `--probe` writes each known protocol's first request (taken from the
  driver itself, see `first_request`) to the matching write characteristic and names the types whose
  decoder accepts the reply. `--capture DIR` also writes the notifications to a capture file.
- `Capture`: every received chunk (and, wrapped around a link, every sent one) as JSON lines, one file
  per device, rotated by size. `bmsbus replay FILE --type NAME` runs a capture through that protocol's
  decoder, exactly as `bmsbus decode` does with hex on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Self, TextIO

from .driver import Driver, DriverOptions, ProtocolEntry
from .links.base import LinkError, LinkTimeout

CAPTURE_VERSION = 1


# --- capture ---------------------------------------------------------------------------------------

class Capture:
    """Raw chunks of one device as JSON lines: `{"t": unix_time, "dir": "rx"|"tx", "hex": "..."}`, after a
    first `{"capture": 1, "device": ..., "type": ..., ...}` header line in every file. `<dir>/<device>.jsonl`
    rolls over to `.1`, `.2`, ... at `max_bytes`, keeping `backups` old files.

    Hook it to a driver with `capture.attach(driver)` (received chunks via Driver.on_chunk) or wrap the
    link with `CaptureLink(link, capture)` to record what is sent as well."""

    def __init__(self, directory: str | Path, device: str, *, meta: dict[str, Any] | None = None,
                 max_bytes: int = 5_000_000, backups: int = 3) -> None:
        self.dir = Path(directory)
        self.device = device
        self.meta = {"capture": CAPTURE_VERSION, "device": device, **(meta or {})}
        self.max_bytes = max_bytes
        self.backups = backups
        self.path = self.dir / f"{device}.jsonl"
        self._file: IO[str] | None = None
        self.chunks = 0

    def _open(self) -> IO[str]:
        if self._file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()/rotate
            if fresh:
                self._write_line({**self.meta, "t": time.time()})
        return self._file

    def _write_line(self, obj: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._file.flush()

    def _rotate(self) -> None:
        """dev.jsonl -> dev.jsonl.1 -> ... -> dev.jsonl.<backups>; the oldest goes."""
        if self._file is not None:
            self._file.close()
            self._file = None
        numbered = [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.backups + 1)]
        if numbered:
            numbered[-1].unlink(missing_ok=True)
            for older, newer in zip(reversed(numbered[1:]), reversed(numbered[:-1]), strict=True):
                if newer.exists():
                    os.replace(newer, older)
            os.replace(self.path, numbered[0])
        else:
            self.path.unlink(missing_ok=True)

    def record(self, data: bytes, direction: str = "rx") -> None:
        f = self._open()
        if f.tell() >= self.max_bytes:
            self._rotate()
            self._open()
        self._write_line({"t": round(time.time(), 6), "dir": direction, "hex": bytes(data).hex()})
        self.chunks += 1

    def chunk(self, data: bytes) -> None:
        """Driver.on_chunk hook."""
        self.record(data, "rx")

    def attach(self, driver: Driver) -> Driver:
        driver.on_chunk = self.chunk
        return driver

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureLink:
    """A Link that records what goes out (and, for drivers without the on_chunk hook, what comes in)."""

    def __init__(self, link: Any, capture: Capture, *, record_rx: bool = False) -> None:
        self.link, self.capture, self.record_rx = link, capture, record_rx

    @property
    def kind(self) -> str:
        return self.link.kind

    @property
    def rssi(self) -> int | None:
        return self.link.rssi

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.link.__aexit__(*exc)

    async def send(self, data: bytes) -> None:
        self.capture.record(data, "tx")
        await self.link.send(data)

    async def receive(self) -> bytes:
        chunk = await self.link.receive()
        if self.record_rx:
            self.capture.record(chunk, "rx")
        return chunk

    def discard_pending(self) -> None:
        self.link.discard_pending()


def read_capture(paths: Sequence[str | Path]) -> tuple[dict[str, Any], list[tuple[float, str, bytes]]]:
    """Header and (time, direction, bytes) records of capture files (rotated ones: give oldest first)."""
    meta: dict[str, Any] = {}
    records: list[tuple[float, str, bytes]] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
                if "capture" in obj:
                    meta = meta or obj
                    continue
                records.append((float(obj.get("t", 0)), obj.get("dir", "rx"), bytes.fromhex(obj["hex"])))
    return meta, records


def replay(paths: Sequence[str | Path], protocol: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """A capture's received chunks through `protocol`'s decode (default: the type in the capture header)."""
    from .protocols import get

    meta, records = read_capture(paths)
    name = protocol or meta.get("protocol") or meta.get("type")
    if not name:
        raise ValueError("the capture names no protocol; pass --type NAME")
    entry = get(name)
    if entry.decode is None:
        raise ValueError(f"protocol {name!r} has no decoder")
    return name, entry.decode([data for _, direction, data in records if direction == "rx"])


# --- probes ----------------------------------------------------------------------------------------

class _FirstSend:
    """A link that records the first thing a driver sends and then ends the conversation."""

    kind = "probe"
    rssi = None

    def __init__(self) -> None:
        self.sent: bytes | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def send(self, data: bytes) -> None:
        if self.sent is None:
            self.sent = bytes(data)
        raise LinkTimeout("probe recorded")

    async def receive(self) -> bytes:
        await asyncio.sleep(3600)
        raise LinkTimeout("probe")

    def discard_pending(self) -> None:
        pass


async def first_request(entry: ProtocolEntry, timeout: float = 0.5) -> bytes | None:
    """What this protocol's driver sends first (its handshake or first poll), by running the driver
    against a link that records it. None for devices that stream without being asked."""
    if getattr(entry.driver, "owns_transport", False):
        return None
    link = _FirstSend()
    try:
        driver = entry.driver(link, DriverOptions(request_timeout=timeout))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - a driver that cannot be built without a device: no probe
        return None
    for step in (driver.open, driver.read):
        if link.sent is not None:
            break
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await step()
    return link.sent


async def probe_table(entries: Iterable[ProtocolEntry]) -> dict[tuple[str, str, str, bool, bytes], list[ProtocolEntry]]:
    """(service, notify, write, with_response, request) -> protocols sharing that probe."""
    from .links.gatt import uuid128

    table: dict[tuple[str, str, str, bool, bytes], list[ProtocolEntry]] = {}
    for entry in entries:
        if entry.ble is None or entry.decode is None:
            continue
        request = await first_request(entry)
        if not request:
            continue
        b = entry.ble
        key = (uuid128(b.service), uuid128(b.notify), uuid128(b.write), b.write_with_response, request)
        table.setdefault(key, []).append(entry)
    return table


def decodes(entry: ProtocolEntry, chunks: list[bytes]) -> bool:
    if entry.decode is None or not chunks:
        return False
    try:
        results = entry.decode(chunks)
    except Exception:  # noqa: BLE001 - a decoder choking on foreign bytes just means "not this one"
        return False
    return any("error" not in r for r in results)


# --- output helpers --------------------------------------------------------------------------------

def hexdump(data: bytes) -> str:
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in data)
    return f"{data.hex(' ')}  |{text}|"


def guess(local_name: str | None, uuids: Sequence[str], mfr: dict[int, bytes], address: str) -> list[str]:
    try:
        from .scan_guess import guess_types
    except ImportError:
        return []
    try:
        return guess_types(local_name, list(uuids), mfr, address)
    except Exception:  # noqa: BLE001 - a guess is a nicety; never fail a scan over it
        return []


class Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()

    def __call__(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def stamp(self) -> str:
        return f"{time.monotonic() - self.t0:8.3f}"


# --- scan ------------------------------------------------------------------------------------------

def _proxy_configs(hosts: Sequence[str], psk: str | None) -> list[Any]:
    from .links.esphome import ProxyConfig

    out = []
    for h in hosts:
        host, _, port = h.partition(":")
        out.append(ProxyConfig(host=host, port=int(port or 6053), noise_psk=psk, name=h))
    return out


async def scan(timeout: float = 5.0, adapter: str | None = None, esphome: Sequence[str] = (),
               noise_psk: str | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if esphome:
        from .links.esphome import int_to_mac
        from .links.esphome import scan as proxy_scan

        for proxy, s in await proxy_scan(_proxy_configs(esphome, noise_psk), timeout):
            mac = int_to_mac(s.address)
            rows.append({"address": mac, "name": s.name, "rssi": s.rssi, "via": proxy.cfg.label,
                         "service_uuids": list(s.service_uuids),
                         "manufacturer_data": {str(k): v.hex() for k, v in s.manufacturer_data.items()},
                         "guess": guess(s.name, s.service_uuids, s.manufacturer_data, mac)})
    else:
        from .links.ble import scan as ble_scan

        for device, adv in await ble_scan(timeout, adapter):
            rows.append({"address": device.address, "name": adv.local_name or device.name, "rssi": adv.rssi,
                         "via": adapter or "default adapter", "service_uuids": list(adv.service_uuids),
                         "manufacturer_data": {str(k): v.hex() for k, v in adv.manufacturer_data.items()},
                         "guess": guess(adv.local_name, adv.service_uuids, dict(adv.manufacturer_data),
                                        device.address)})
    return sorted(rows, key=lambda r: -(r["rssi"] if r["rssi"] is not None else -127))


def print_scan(rows: list[dict[str, Any]], out: TextIO) -> None:
    p = Printer(out)
    if not rows:
        p("no BLE devices seen (is the adapter powered? `bluetoothctl show`)")
        return
    p(f"{'RSSI':>5}  {'ADDRESS':17}  {'NAME':24}  GUESS")
    for r in rows:
        rssi = "" if r["rssi"] is None else str(r["rssi"])
        p(f"{rssi:>5}  {r['address']:17}  {(r['name'] or '-')[:24]:24}  {', '.join(r['guess'][:4]) or '-'}")


# --- snoop -----------------------------------------------------------------------------------------

async def snoop(address: str, *, adapter: str | None = None, seconds: float = 20.0, probe: bool = False,
                capture_dir: str | None = None, scan_timeout: float = 10.0, out: TextIO | None = None,
                probe_wait: float = 1.5) -> list[str]:
    """Dump a device's GATT tree and notifications; with `probe`, returns the suggested types."""
    from bleak import BleakClient
    from bleak_retry_connector import establish_connection

    from .links.base import is_mac
    from .links.ble import mapped
    from .links.gatt import Char, choose

    p = Printer(out or sys.stdout)
    capture = Capture(capture_dir, address.replace(":", "").lower(), meta={"address": address, "tool": "snoop"}) \
        if capture_dir else None
    spec_finder = _finder(address, adapter)
    suggestions: list[str] = []
    with mapped(address, "snoop"):
        device, adv = await spec_finder(scan_timeout)
        p(f"# {device.address} name={adv.local_name or device.name!r} rssi={adv.rssi} "
          f"uuids={list(adv.service_uuids)} mfr={ {k: v.hex() for k, v in adv.manufacturer_data.items()} }")
        if not is_mac(address):
            p(f"# resolved {address!r} to {device.address}")
        client = await establish_connection(BleakClient, device, address, max_attempts=2)
        try:
            p("# GATT")
            table: list[Char] = []
            by_handle = {}
            for service in client.services:
                p(f"service {service.uuid} ({service.description}) handle={service.handle}")
                for c in service.characteristics:
                    by_handle[c.handle] = c
                    table.append(Char(c.uuid, c.handle, frozenset(c.properties), service.uuid))
                    value = ""
                    if "read" in c.properties:
                        try:
                            async with asyncio.timeout(3):
                                value = " value=" + hexdump(bytes(await client.read_gatt_char(c)))
                        except Exception as exc:  # noqa: BLE001 - a refused read is information too
                            value = f" read failed: {exc}"
                    p(f"  char {c.uuid} handle={c.handle} props={','.join(c.properties)}{value}")
                    for d in c.descriptors:
                        p(f"    desc {d.uuid} handle={d.handle}")
            received: list[tuple[int, bytes]] = []

            def on_notify(char: Any, data: bytearray) -> None:
                chunk = bytes(data)
                received.append((char.handle, chunk))
                if capture is not None:
                    capture.chunk(chunk)
                p(f"{p.stamp()} notify handle={char.handle} len={len(chunk):3} {hexdump(chunk)}")

            for c in by_handle.values():
                if {"notify", "indicate"} & set(c.properties):
                    try:
                        await client.start_notify(c, on_notify)
                        p(f"# subscribed handle={c.handle} ({c.uuid})")
                    except Exception as exc:  # noqa: BLE001 - keep snooping the others
                        p(f"# cannot subscribe handle={c.handle}: {exc}")
            if probe:
                from .protocols import REGISTRY

                for (service, notify, write, with_response, request), entries in (
                        await probe_table(REGISTRY.values())).items():
                    spec = entries[0].ble
                    assert spec is not None
                    try:
                        choice = choose(table, spec, address)
                    except LinkError:
                        continue
                    received.clear()
                    p(f"{p.stamp()} probe {'/'.join(e.name for e in entries)}: write handle={choice.write.handle} "
                      f"{request.hex(' ')}")
                    if capture is not None:
                        capture.record(request, "tx")
                    try:
                        async with asyncio.timeout(3):
                            await client.write_gatt_char(by_handle[choice.write.handle], request,
                                                         response=choice.write_response)
                    except Exception as exc:  # noqa: BLE001 - a refused probe is an answer too
                        p(f"# probe write failed: {exc}")
                        continue
                    await asyncio.sleep(probe_wait)
                    chunks = [c for h, c in received if h == choice.notify.handle]
                    for e in entries:
                        if decodes(e, chunks):
                            suggestions.append(e.name)
                p(f"# suggested type: {', '.join(suggestions) if suggestions else 'none of the probes was answered'}")
            await asyncio.sleep(seconds)
        finally:
            if capture is not None:
                capture.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await client.disconnect()
    return suggestions


def _finder(address: str, adapter: str | None) -> Callable[[float], Any]:
    async def find(timeout: float) -> tuple[Any, Any]:
        from bleak import BleakScanner

        from .links.base import DeviceNotFound
        from .links.base import is_mac

        kwargs: dict[str, Any] = {"bluez": {"adapter": adapter}} if adapter else {}
        hit: list[Any] = []

        def match(d: Any, adv: Any) -> bool:
            ok = d.address.upper() == address.upper() if is_mac(address) else address in (adv.local_name, d.name)
            if ok:
                hit.append(adv)
            return ok

        device = await BleakScanner.find_device_by_filter(match, timeout=timeout, **kwargs)
        if device is None:
            raise DeviceNotFound(f"{address}: not advertising within {timeout:.0f} s")
        return device, hit[-1]

    return find


# --- commands --------------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("scan", help="list BLE devices nearby with the BMS type they may be",
                       description="List advertising BLE devices (through the host's BlueZ, or ESPHome proxies).")
    s.add_argument("--timeout", type=float, default=5.0, help="seconds to listen (default 5)")
    s.add_argument("--adapter", help="hci0, hci1, ... (default: BlueZ's default adapter)")
    s.add_argument("--esphome", action="append", default=[], metavar="HOST[:PORT]",
                   help="listen through this ESPHome Bluetooth proxy instead (repeatable)")
    s.add_argument("--noise-psk", help="the proxies' API encryption key")
    s.add_argument("--json", action="store_true", help="JSON instead of a table")
    s.set_defaults(func=_scan_command)

    n = sub.add_parser("snoop", help="dump a BLE device's GATT tree and notifications (for bug reports)",
                       description="Connect to a BLE device, print its GATT table, log every notification as hex "
                                   "with timestamps; --probe tries every known protocol's first request.")
    n.add_argument("address", help="MAC or advertised name")
    n.add_argument("--adapter", help="hci0, hci1, ...")
    n.add_argument("--seconds", type=float, default=20.0, help="how long to listen after subscribing (default 20)")
    n.add_argument("--probe", action="store_true",
                   help="write each known protocol's first (read-only) request and suggest a type from the reply")
    n.add_argument("--capture", metavar="DIR", help="also write the notifications to a capture file in DIR")
    n.set_defaults(func=_snoop_command)

    r = sub.add_parser("replay", help="decode a raw capture file with a protocol's decoder",
                       description="Run the received chunks of a capture (JSON lines, see docs/transports.md) "
                                   "through a protocol's decoder and print the results as JSON.")
    r.add_argument("files", nargs="+", metavar="FILE", help="capture file(s); rotated ones oldest first")
    r.add_argument("--type", dest="protocol", help="BMS type (default: the one named in the capture)")
    r.set_defaults(func=_replay_command)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except LinkError as exc:
        print(f"bmsbus: {exc}", file=sys.stderr)
        return None


def _scan_command(args: argparse.Namespace) -> int:
    rows = _run(scan(args.timeout, args.adapter, args.esphome, args.noise_psk))
    if rows is None:
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_scan(rows, sys.stdout)
    return 0


def _snoop_command(args: argparse.Namespace) -> int:
    result = _run(snoop(args.address, adapter=args.adapter, seconds=args.seconds, probe=args.probe,
                        capture_dir=args.capture))
    return 1 if result is None else 0


def _replay_command(args: argparse.Namespace) -> int:
    try:
        name, results = replay(args.files, args.protocol)
    except (OSError, ValueError, KeyError) as exc:
        print(f"bmsbus replay: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    print(json.dumps({"type": name, "frames": results}, indent=2, ensure_ascii=False, default=str))
    return 0

