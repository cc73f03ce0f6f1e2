"""The Influx writer: samples and battery states into InfluxDB through the v2 write API.

Works against InfluxDB 1.8+ (token "user:password", bucket "db/rp"), 2.x, 3.x and VictoriaMetrics.
Points are derived from the quantity catalog: nothing here names a BMS field by hand.

    bms      tags site, bms      fields: every scalar sample quantity; temperatures_<n>; switch_<name> (0/1);
                                  alarm_count, balancing_count
    cells    tags site, bms      fields: cell_voltages_<nnn>, cell_resistances_<nnn> (wide: one series per pack)
    battery  tags site, battery, kind   fields: every numeric scalar catalog quantity of BatteryState; stale (0/1)

Field types never change: numbers are always floats, switches always integers.
Writes are batched; a failed batch is retried with backoff and kept (bounded queue, oldest dropped
and counted when full) so a database restart loses nothing short of the queue bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections import deque
from itertools import islice
from typing import Final

from bmsbus.shared.bus import Backoff, Bus, Inbox, run_connected
from bmsbus.shared.config import Config
from bmsbus.shared.models import BatteryState, Sample
from bmsbus.shared.quantities import CATALOG, SAMPLE_QUANTITIES, Shape
from bmsbus.shared.runner import ServiceSpec, add_service_command
from bmsbus.shared.topics import Topics

log = logging.getLogger("bmsbus.influx_writer")

MAX_QUEUED_LINES = 200_000


def _escape_tag(v: str) -> str:
    return v.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _line(measurement: str, tags: dict[str, str], fields: dict[str, float | int], ts: float) -> str | None:
    if not fields:
        return None
    tag_part = "".join(f",{k}={_escape_tag(v)}" for k, v in sorted(tags.items()))
    field_part = ",".join(f"{k}={v}i" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={float(v)!r}"
                          for k, v in fields.items())
    return f"{measurement}{tag_part} {field_part} {int(ts * 1000)}"


def sample_lines(sample: Sample, site: str, prefix: str = "") -> list[str]:
    """Line protocol (ms precision) for one sample, derived from the catalog."""
    values = sample.values()
    tags = {"site": site, "bms": sample.bms}
    main: dict[str, float | int] = {}
    cells: dict[str, float | int] = {}
    for q in SAMPLE_QUANTITIES:
        v = values.get(q.key)
        if v is None:
            continue
        match q.shape:
            case Shape.SCALAR:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    main[q.key] = float(v)
            case Shape.PER_CELL:
                cells.update({f"{q.key}_{i + 1:03d}": float(x) for i, x in enumerate(v)})
            case Shape.PER_SENSOR:
                main.update({f"{q.key}_{i + 1}": float(x) for i, x in enumerate(v)})
            case Shape.MAPPING:
                main.update({f"switch_{name}": int(bool(on)) for name, on in v.items()})
            case Shape.INDICES:
                main[f"{q.key}_count"] = len(v)
            case Shape.LABELS:
                main["alarm_count"] = len(v)
    return [line for line in (_line(f"{prefix}bms", tags, main, sample.ts),
                              _line(f"{prefix}cells", tags, cells, sample.ts)) if line]


# The BatteryState fields that are scalar catalog quantities (sample keys such as voltage or cycles, and the
# aggregator's own: meters, cell statistics, computed cycles, time to go), in the model's order.
STATE_FIELDS: Final[tuple[str, ...]] = tuple(
    k for k in BatteryState.model_fields if k in CATALOG and CATALOG[k].shape is Shape.SCALAR)


def state_lines(state: BatteryState, site: str, prefix: str = "") -> list[str]:
    """Line protocol for one battery state: every numeric scalar catalog quantity it carries (text ones such as
    cell_min_member are left out)."""
    if state.ts is None:
        return []
    data = state.model_dump(exclude_none=True)
    fields: dict[str, float | int] = {}
    for key in STATE_FIELDS:
        v = data.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            fields[key] = float(v)
    fields["stale"] = int(state.stale)
    line = _line(f"{prefix}battery", {"site": site, "battery": state.id, "kind": state.kind}, fields, state.ts)
    return [line] if line else []


class InfluxSink:
    """Batches lines and writes them from a worker thread (influxdb-client is synchronous)."""

    def __init__(self, cfg: Config) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        ic = cfg.influx
        self.cfg = ic
        self.client = InfluxDBClient(url=ic.url or "", token=ic.token.get_secret_value() if ic.token else "",
                                     org=ic.org, timeout=10_000)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)
        self.queue: deque[str] = deque()
        self.dropped = 0
        self.written = 0
        self._wake = asyncio.Event()

    def add(self, lines: list[str]) -> None:
        for line in lines:
            if len(self.queue) >= MAX_QUEUED_LINES:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(line)
        if len(self.queue) >= self.cfg.batch_size:
            self._wake.set()

    def _write(self, batch: list[str]) -> None:
        from influxdb_client import WritePrecision

        self.write_api.write(bucket=self.cfg.bucket, org=self.cfg.org, record=batch,
                             write_precision=WritePrecision.MS)

    async def run(self) -> None:
        backoff = Backoff(first=1.0, cap=60.0)
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            while self.queue:
                batch = list(islice(self.queue, self.cfg.batch_size))
                try:
                    await asyncio.to_thread(self._write, batch)
                except Exception as exc:  # noqa: BLE001 - any failure of the database: keep the batch, back off
                    delay = backoff.next()
                    log.warning("write of %d lines failed (%s); retrying in %.1f s", len(batch), exc, delay)
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                for _ in batch:
                    self.queue.popleft()
                self.written += len(batch)

    def close(self) -> None:
        self.client.close()


class InfluxWriter:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_root, cfg.site)
        self.inbox = Inbox(self.topics, "influx_writer")
        self.sink = InfluxSink(cfg)

    def connect(self) -> Bus:
        return Bus(self.cfg.mqtt, client_id=f"bmsbus-influx-writer-{self.cfg.site}", persistent=True)  # type: ignore[arg-type]

    async def on_bus(self, bus: Bus) -> None:
        await bus.subscribe(self.topics.all_of("sample"), self.topics.all_of("state"))
        prefix = self.cfg.influx.measurement_prefix
        async for msg in bus.messages():
            decoded = self.inbox.decode(msg)
            if decoded is None:
                continue
            _, model = decoded
            if isinstance(model, Sample):
                self.sink.add(sample_lines(model, self.cfg.site, prefix))
            elif isinstance(model, BatteryState) and not msg.retain:
                self.sink.add(state_lines(model, self.cfg.site, prefix))

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.sink.run(), name="influx-sink")
                tg.create_task(run_connected("influx-writer", self.connect, self.on_bus), name="bus")
        finally:
            self.sink.close()


async def run(cfg: Config) -> None:
    if not cfg.influx.url:
        log.info("influx.url is not set: the Influx writer stays idle")
        await asyncio.Event().wait()
    await InfluxWriter(cfg).run()


SERVICE = ServiceSpec(name="influx-writer", help="write samples and battery states to InfluxDB", run=run)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_service_command(sub, SERVICE)
