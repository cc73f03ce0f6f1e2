"""Collector supervision: what state it is in, and an optional HTTP endpoint that shows it.

`Health` reads the collector's own bookkeeping (runners, outbox, bus) and answers three questions:

- **healthy?** (`/healthz`, 200 `ok` / 503 with the reason) - is data reaching the bus?
    * the first `startup_grace` seconds (60) after start: healthy, links and the broker get time to come up;
    * after that: the bus is connected, and at least one device published a sample within
      max(3 x its publish period, 10 s) - or no devices are configured.
    One dead BMS does not make the collector unhealthy (it shows per device in /status and /metrics);
    every BMS silent, or no broker, does.
- **stalled?** (the systemd watchdog, systemd.py) - would a restart help? Every device task has shown no
  sign of life (a sample, or a change of its link state: connecting, failed, ...) for
  max(300 s, 4 x its sample/publish period). A device that keeps failing still changes its link state on
  every attempt (the reconnect backoff is capped at 120 s), so only a task that hangs counts. A broker
  outage is not a stall: samples wait in the outbox and a restart would not bring the broker back.
- **what is going on?** (`/status` as JSON, `/metrics` as Prometheus text 0.0.4).

The HTTP server is asyncio.start_server with a minimal HTTP/1.1 handler: GET only (405 otherwise), one
request per connection (`Connection: close`), bounded request line and headers, a timeout per request and
a cap on concurrent connections. Whatever a client sends, it gets an error status or is disconnected; the
collector never notices.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bmsbus.shared import __version__
from bmsbus.shared.bus import Backoff

if TYPE_CHECKING:
    from bmsbus.shared.bus import Bus
    from bmsbus.shared.config import HttpConfig

    from .service import BmsPublisher, Collector, DeviceRunner

log = logging.getLogger("bmsbus.collector.health")

STARTUP_GRACE = 60.0  # s after start during which /healthz is 200 whatever the state
FRESH_FACTOR, FRESH_FLOOR = 3.0, 10.0  # a device is fresh if its last sample is younger than max(3 x period, 10 s)
STALL_FACTOR, STALL_FLOOR = 4.0, 300.0  # a device task is stalled after max(4 x period, 300 s) without activity

# Spool counters (outbox.spool, if there is one): attribute, metric, type, help.
SPOOL_NUMBERS = (
    ("spooled", "bmsbus_outbox_spool_written_total", "counter", "Samples written to the spool."),
    ("replayed", "bmsbus_outbox_spool_replayed_total", "counter", "Samples read back from the spool and sent."),
    ("dropped_oldest", "bmsbus_outbox_spool_dropped_total", "counter", "Unsent samples deleted to bound the spool."),
    ("corrupt_records", "bmsbus_outbox_spool_corrupt_records_total", "counter", "Damaged spool regions skipped."),
    ("write_errors", "bmsbus_outbox_spool_write_errors_total", "counter", "Failed writes to the spool."),
    ("bytes_on_disk", "bmsbus_outbox_spool_bytes", "gauge", "Size of the spool on disk."),
    ("pending_records", "bmsbus_outbox_spool_pending", "gauge", "Samples in the spool not yet sent."),
)

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _age(ts: float | None, now: float) -> float | None:
    return None if ts is None else max(0.0, now - ts)


class Health:
    """The collector's health, status and metrics, computed on demand from its live state."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.started = time.monotonic()
        self.startup_grace = STARTUP_GRACE
        self.stall_floor = STALL_FLOOR
        self.bus_connected = False
        self.bus_changed = time.time()  # when bus_connected last changed (or start)
        self.bus_connects = 0
        self.bus_up = asyncio.Event()  # set while connected
        # HTTP endpoint
        self.http_port: int | None = None
        self.http_ready = asyncio.Event()
        self.request_timeout = 10.0
        self.max_clients = 32
        self.requests = 0
        self.bad_requests = 0
        self._clients: set[asyncio.StreamWriter] = set()

    # --- the bus -------------------------------------------------------------------------------

    def track_bus(self, body: Callable[[Bus], Awaitable[None]]) -> Callable[[Bus], Awaitable[None]]:
        """Wraps the body run_connected runs while connected, so the bus state is known here."""

        async def tracked(bus: Bus) -> None:
            self.bus_connected, self.bus_changed = True, time.time()
            self.bus_connects += 1
            self.bus_up.set()
            try:
                await body(bus)
            finally:
                self.bus_connected, self.bus_changed = False, time.time()
                self.bus_up.clear()

        return tracked

    # --- per device ----------------------------------------------------------------------------

    @staticmethod
    def period(runner: DeviceRunner) -> float:
        return max(runner.sample_period, runner.publish_period)

    @staticmethod
    def packs(runner: DeviceRunner) -> dict[str, Any]:
        """The packs a JK-PB bus device publishes, each under its own bms id (empty for a one-pack device)."""
        return dict(runner.packs) if runner.addresses is not None else {}

    def samples(self, runner: DeviceRunner) -> int:
        """Samples published (handed to the outbox): a device's seq, or the sum over its packs."""
        packs = self.packs(runner)
        return sum(p.seq for p in packs.values()) if packs else runner.seq

    @staticmethod
    def sample_ts(runner: BmsPublisher) -> float | None:
        return runner.last_sample.ts if runner.last_sample is not None else None

    def fresh(self, runner: DeviceRunner, now: float) -> bool:
        age = _age(self.sample_ts(runner), now)
        return age is not None and age <= max(FRESH_FACTOR * self.period(runner), FRESH_FLOOR)

    def last_activity(self, runner: DeviceRunner) -> float:
        """Wall time of the last sign of life of a device task: a sample or a link-state change."""
        link = runner.link_state
        return max(self.sample_ts(runner) or 0.0, link.ts if link is not None else 0.0, self.collector.started)

    # --- the rules -----------------------------------------------------------------------------

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def check(self) -> tuple[bool, str]:
        """(healthy, reason): the /healthz rule (module docstring)."""
        now = time.time()
        runners = list(self.collector.runners.values())
        starting = self.uptime() < self.startup_grace
        if not self.bus_connected:
            since = f"for {now - self.bus_changed:.0f} s" if self.bus_connects else "since start"
            if starting:
                return True, f"starting: waiting for the broker ({since})"
            return False, f"bus disconnected {since}"
        if not runners:
            return True, "ok: no devices configured"
        fresh = sum(self.fresh(r, now) for r in runners)
        if fresh:
            return True, f"ok: {fresh}/{len(runners)} devices sampling"
        if starting:
            return True, "starting: no device has published yet"
        return False, "no device has published a sample recently: " + "; ".join(
            f"{r.id}: {self._describe(r, now)}" for r in runners[:8]) + ("; ..." if len(runners) > 8 else "")

    def stalled(self) -> str | None:
        """Why every device task looks hung (the watchdog rule), or None while any of them is alive."""
        now = time.time()
        runners = list(self.collector.runners.values())
        if not runners:
            return None
        quiet = []
        for r in runners:
            limit = max(STALL_FACTOR * self.period(r), self.stall_floor)
            silent = now - self.last_activity(r)
            if silent <= limit:
                return None
            quiet.append(f"{r.id} {silent:.0f} s")
        return "every device task shows no activity (" + ", ".join(quiet[:8]) + ")"

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        now = time.time()
        runners = list(self.collector.runners.values())
        fresh = sum(self.fresh(r, now) for r in runners)
        bus = "bus connected" if self.bus_connected else "bus DISCONNECTED"
        pending = self.pending()
        return f"{bus}; {fresh}/{len(runners)} devices sampling; outbox {pending} pending"

    def _describe(self, r: DeviceRunner, now: float) -> str:
        link = r.link_state
        parts = [link.state if link is not None else "not started"]
        age = _age(self.sample_ts(r), now)
        parts.append(f"last sample {age:.0f} s ago" if age is not None else "no sample yet")
        if link is not None and link.last_error:
            parts.append(link.last_error)
        return ", ".join(parts)

    # --- views ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        col = self.collector
        now = time.time()
        ok, reason = self.check()
        devices = {}
        for r in col.runners.values():
            link = r.link_state
            sample = r.last_sample
            devices[r.id] = {
                "type": r.dev.type,
                "protocol": r.entry.name,
                "link_state": link.state if link is not None else None,
                "link_since": link.since if link is not None else None,
                "rssi": link.rssi if link is not None else None,
                "consecutive_failures": r.failures,
                "last_error": link.last_error if link is not None else None,
                "transport": r.transport_kind,
                "connects": r.connects,
                "retry_in_s": r.retry_in if link is not None and not link.ok else None,
                "samples_published": self.samples(r),
                "codec_errors": r.codec_errors_seen,
                "invalid_values": r.bad_values,
                "last_sample_age_s": _age(self.sample_ts(r), now),
                "sample": json.loads(sample.to_json()) if sample is not None else None,
            }
            packs = self.packs(r)
            if packs:  # a JK-PB bus: each pack is its own bms on the bus
                devices[r.id]["packs"] = {pid: {
                    "link_state": p.link_state.state if p.link_state is not None else None,
                    "samples_published": p.seq,
                    "invalid_values": p.bad_values,
                    "last_sample_age_s": _age(self.sample_ts(p), now),
                    "sample": json.loads(p.last_sample.to_json()) if p.last_sample is not None else None,
                } for pid, p in packs.items()}
        return {
            "collector": col.id, "boot": col.boot, "version": __version__, "started": col.started,
            "uptime_s": round(self.uptime(), 3),
            "healthy": ok, "reason": reason,
            "bus": {"connected": self.bus_connected, "since": self.bus_changed, "connects": self.bus_connects},
            "outbox": {"pending": self.pending(), "dropped": col.outbox.dropped, "spool": self._spool()},
            "devices": devices,
        }

    def pending(self) -> int:
        """Samples waiting for the broker, in memory and in the spool."""
        box = self.collector.outbox
        return len(box.pending) + len(box.unspooled) + (box.spool.pending_records if box.spool is not None else 0)

    def _spool(self) -> dict[str, Any]:
        """The spool's counters, if the outbox has a spool (it is optional)."""
        box = self.collector.outbox
        out: dict[str, Any] = {"enabled": box.spool is not None}
        if box.spool_error:
            out["error"] = box.spool_error
        if box.spool is not None:
            out.update({name: getattr(box.spool, name) for name, *_ in SPOOL_NUMBERS})
        return out

    def metrics(self) -> str:
        col = self.collector
        now = time.time()
        ok, _ = self.check()
        m = _Metrics()
        m.add("bmsbus_collector_info", "gauge", "Collector identity; the value is always 1.",
              1, collector=col.id, boot=col.boot, version=__version__)
        m.add("bmsbus_collector_uptime_seconds", "gauge", "Seconds since the collector started.", self.uptime())
        m.add("bmsbus_collector_healthy", "gauge", "1 if /healthz answers 200.", int(ok))
        m.add("bmsbus_collector_bus_connected", "gauge", "1 while connected to the MQTT broker.",
              int(self.bus_connected))
        m.add("bmsbus_collector_bus_connects_total", "counter", "Connections made to the broker.", self.bus_connects)
        for name, kind, help_, get in (
            ("bmsbus_device_samples_total", "counter", "Samples published (queued for the bus).",
             self.samples),
            ("bmsbus_device_connected", "gauge", "1 while the link to the BMS is up.",
             lambda r: int(r.link_state is not None and r.link_state.state == "connected")),
            ("bmsbus_device_consecutive_failures", "gauge", "Failed sessions since the last good connect.",
             lambda r: r.failures),
            ("bmsbus_device_last_sample_age_seconds", "gauge", "Seconds since the last published sample.",
             lambda r: _age(self.sample_ts(r), now)),
            ("bmsbus_device_codec_errors_total", "counter", "Bad frames or bytes the codec threw away.",
             lambda r: r.codec_errors_seen),
            ("bmsbus_device_invalid_values_total", "counter", "Decoded values rejected as out of range.",
             lambda r: r.bad_values),
            ("bmsbus_device_rssi_dbm", "gauge", "Signal strength at the last connect (BLE).",
             lambda r: r.link_state.rssi if r.link_state is not None else None),
        ):
            m.family(name, kind, help_)
            for r in col.runners.values():
                value = get(r)
                if value is not None:
                    m.sample(name, value, bms=r.id)
        packs = [(r.id, p) for r in col.runners.values() for p in self.packs(r).values()]
        if packs:
            for name, kind, help_, get in (
                ("bmsbus_pack_samples_total", "counter", "Samples published for one pack of a JK-PB bus.",
                 lambda p: p.seq),
                ("bmsbus_pack_connected", "gauge", "1 while the pack is heard on its bus.",
                 lambda p: int(p.link_state is not None and p.link_state.state == "connected")),
                ("bmsbus_pack_last_sample_age_seconds", "gauge", "Seconds since the pack's last sample.",
                 lambda p: _age(self.sample_ts(p), now)),
            ):
                m.family(name, kind, help_)
                for device, p in packs:
                    value = get(p)
                    if value is not None:
                        m.sample(name, value, bms=p.id, device=device)
        m.add("bmsbus_outbox_pending", "gauge", "Samples waiting for the broker (memory and spool).",
              self.pending())
        m.add("bmsbus_outbox_dropped_total", "counter", "Samples dropped from memory because a queue was full.",
              col.outbox.dropped)
        spool = self._spool()
        m.add("bmsbus_outbox_spool_enabled", "gauge", "1 if samples spool to disk while the broker is away.",
              int(spool["enabled"]))
        for name, metric, kind, help_ in SPOOL_NUMBERS:
            if name in spool:
                m.add(metric, kind, help_, spool[name])
        m.add("bmsbus_http_requests_total", "counter", "Requests answered by this endpoint.", self.requests)
        m.add("bmsbus_http_bad_requests_total", "counter", "Malformed requests.", self.bad_requests)
        return m.text()

    # --- HTTP ----------------------------------------------------------------------------------

    async def serve(self, cfg: HttpConfig) -> None:
        """Serve /healthz, /status, /metrics until cancelled. A port that is taken is retried, not fatal:
        the endpoint is optional, reading the BMSes is not."""
        backoff = Backoff(first=5.0, factor=2.0, cap=60.0, jitter=0.2)
        while True:
            try:
                server = await asyncio.start_server(self._handle, cfg.host, cfg.port, limit=8192)
                break
            except OSError as exc:
                delay = backoff.next()
                log.error("health endpoint: cannot listen on %s:%d (%s); retrying in %.0f s",
                          cfg.host, cfg.port, exc.strerror or exc, delay)
                await asyncio.sleep(delay)
        bound = [sock.getsockname()[:2] for sock in server.sockets]
        self.http_port = bound[0][1]
        log.info("health endpoint on %s (/healthz /status /metrics)",
                 ", ".join(f"http://{f'[{h}]' if ':' in h else h}:{p}/" for h, p in bound))
        self.http_ready.set()
        try:
            await server.serve_forever()
        finally:
            server.close()
            for writer in list(self._clients):
                writer.close()
            self.http_ready.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_clients:
            writer.close()
            return
        self._clients.add(writer)
        try:
            async with asyncio.timeout(self.request_timeout):
                response = await self._respond(reader)
                if response is None:
                    return  # connected and closed without a request
                status, ctype, body, extra = response
                head = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
                        "Cache-Control: no-store", "Connection: close", *extra]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that went away or never finished: nothing to answer
        except Exception:  # noqa: BLE001 - a bug in a view must not take the collector down; it is logged
            log.exception("health endpoint: request failed")
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes, list[str]] | None:
        try:
            line = await reader.readline()
            if not line:
                return None
            for _ in range(100):  # headers: read and ignore, bounded
                header = await reader.readline()
                if header in (b"\r\n", b"\n", b""):
                    break
            else:
                return self._bad("too many header lines")
        except ValueError:  # asyncio.LimitOverrunError: a line longer than the stream limit
            return self._bad("request line or header too long")
        parts = line.split()
        if len(parts) != 3 or not parts[1].startswith(b"/") or not parts[2].startswith(b"HTTP/1."):
            return self._bad("malformed request line")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        self.requests += 1
        if method != b"GET":
            return "405 Method Not Allowed", "text/plain; charset=utf-8", b"only GET is supported\n", ["Allow: GET"]
        if target == b"/healthz":
            ok, reason = self.check()
            if ok:
                return "200 OK", "text/plain; charset=utf-8", b"ok\n", []
            return "503 Service Unavailable", "text/plain; charset=utf-8", f"unhealthy: {reason}\n".encode(), []
        if target == b"/status":
            body = json.dumps(self.status(), separators=(",", ":"), allow_nan=False).encode()
            return "200 OK", "application/json", body, []
        if target == b"/metrics":
            return "200 OK", PROMETHEUS_TYPE, self.metrics().encode(), []
        return "404 Not Found", "text/plain; charset=utf-8", b"not found; try /healthz, /status or /metrics\n", []

    def _bad(self, why: str) -> tuple[str, str, bytes, list[str]]:
        self.bad_requests += 1
        return "400 Bad Request", "text/plain; charset=utf-8", f"{why}\n".encode(), []


class _Metrics:
    """Prometheus text exposition format 0.0.4: # HELP / # TYPE once per family, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        label = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{label}}} {_number(value)}" if label else f"{name} {_number(value)}")

    def add(self, name: str, kind: str, help_: str, value: float, **labels: str) -> None:
        self.family(name, kind, help_)
        self.sample(name, value, **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(round(value, 6))
