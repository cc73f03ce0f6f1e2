"""Messages waiting for the broker: retained state (latest only) and samples (all of them, in order).

Without a spool, samples wait in memory, bounded. With a spool (`collector.spool_dir`), samples pass
through memory only while the broker is connected and publishing keeps up; while it is down, or when more
than `spill_after` samples are waiting, they go to disk and are replayed, in the order they were taken,
before any newer sample. The order is kept by one rule: every sample in `pending` (memory) is older than
every sample in the spool, and every sample in the spool is older than every sample in `unspooled`.

    pending (memory)  ->  spool (disk)  ->  unspooled (memory; only while the disk refuses writes)

A sample goes to memory only when the two later stages are empty; when it cannot, the samples in
`pending` are moved to the spool first (they are older). Delivery is at least once: a sample whose
PUBACK was lost, or that was on disk beyond the last saved cursor when the collector stopped, is sent
again. Consumers dedupe by (boot, seq).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .spool import Spool, SpoolError

log = logging.getLogger("bmsbus.collector.outbox")


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False


class Outbox:
    """Retained topics (birth, meta, link) keep only their latest payload and are marked dirty; all of
    them are marked dirty again after a reconnect, so the broker always ends up with the newest state and
    nothing stale is replayed over it. Samples queue in order, bounded: when full the oldest go, counted.

    Counters for /metrics: `dropped` (samples lost from memory because a memory queue was full),
    `spool_error` (why the configured spool is not in use, else None) and, when a spool is in use,
    the `Spool` counters on `outbox.spool` (`spooled`, `replayed`, `dropped_oldest`, `corrupt_records`,
    `write_errors`, `bytes_on_disk`, `pending_records`).
    """

    def __init__(self, max_pending: int = 100_000, *, spool: Spool | None = None, spill_after: int = 100,
                 disk_retry_after: float = 5.0) -> None:
        self.retained: dict[str, bytes] = {}
        self.dirty: dict[str, None] = {}  # insertion-ordered set of retained topics to (re)send
        self.pending: deque[Outgoing] = deque()
        self.unspooled: deque[Outgoing] = deque()
        self.max_pending = max_pending
        self.dropped = 0
        self.spool = spool
        self.spool_error: str | None = None
        self.spill_after = spill_after
        # After a failed write, samples wait in memory this long before the disk is tried again, so a full
        # or failing card is not hammered (and the log not flooded) once per sample.
        self.disk_retry_after = disk_retry_after
        self._disk_retry_at = 0.0
        self.connected = False
        self._ready = asyncio.Event()

    @classmethod
    def with_spool(cls, spool_dir: Path | None, spool_max_bytes: int) -> Outbox:
        """An outbox with a spool in `spool_dir` if one is configured and usable. A spool that cannot be
        opened is logged and the collector runs memory-only: monitoring matters more than the spool."""
        if spool_dir is None or spool_max_bytes <= 0:
            return cls()
        try:
            return cls(spool=Spool(spool_dir, spool_max_bytes))
        except (SpoolError, OSError) as exc:
            log.error("spool disabled, samples wait in memory only: %s", exc)
            box = cls()
            box.spool_error = str(exc)
            return box

    # -- producers
    def put(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if retain:
            self.retained[topic] = payload
            self.dirty.pop(topic, None)
            self.dirty[topic] = None
        elif self.spool is None:
            self._keep(self.pending, Outgoing(topic, payload))
        elif (self.connected and len(self.pending) < self.spill_after
              and not self.unspooled and self.spool.empty()):
            self.pending.append(Outgoing(topic, payload))
        else:
            self._spill()
            self._to_disk(Outgoing(topic, payload))
        self._ready.set()

    def _keep(self, queue: deque[Outgoing], item: Outgoing) -> None:
        if len(queue) >= self.max_pending:
            queue.popleft()
            self.dropped += 1
        queue.append(item)

    def _spill(self) -> None:
        """Move the samples waiting in memory to the spool; they are older than anything on it."""
        while self.pending:
            self._to_disk(self.pending.popleft())

    def _to_disk(self, item: Outgoing) -> None:
        assert self.spool is not None
        # Samples that could not be written earlier go first, or they would end up after this one.
        if self.unspooled and time.monotonic() >= self._disk_retry_at:
            while self.unspooled and self._append(self.unspooled[0]):
                self.unspooled.popleft()
        if self.unspooled or not self._append(item):
            self._keep(self.unspooled, item)

    def _append(self, item: Outgoing) -> bool:
        assert self.spool is not None
        try:
            self.spool.append(item.topic, item.payload)
        except OSError as exc:
            self._disk_retry_at = time.monotonic() + self.disk_retry_after
            if self.spool.write_errors <= 3 or self.spool.write_errors % 100 == 0:
                log.error("spool write failed (#%d): %s; keeping samples in memory, retrying in %.0f s",
                          self.spool.write_errors, exc, self.disk_retry_after)
            return False
        return True

    def set_connected(self, connected: bool) -> None:
        """The publisher says whether the broker is reachable. On a disconnect the samples held in memory
        go to disk, so a collector that dies during the outage still has them."""
        self.connected = connected
        if not connected and self.spool is not None:
            self._spill()

    def resend_retained(self) -> None:
        """After a reconnect: the broker may have lost or never seen our retained state."""
        for topic in self.retained:
            self.dirty[topic] = None
        self._ready.set()

    # -- the publisher
    async def next(self) -> Outgoing:
        while True:
            if self.dirty:
                topic = next(iter(self.dirty))
                return Outgoing(topic, self.retained[topic], retain=True)
            if self.pending:
                return self.pending[0]
            if self.spool is not None and (record := self.spool.head()) is not None:
                return Outgoing(record.topic, record.payload)
            if self.unspooled:
                return self.unspooled[0]
            self._ready.clear()
            await self._ready.wait()

    def done(self, item: Outgoing) -> None:
        """`item` was published; only now does it leave the outbox (nothing lost on a broken publish)."""
        if item.retain:
            if self.retained.get(item.topic) is item.payload:
                self.dirty.pop(item.topic, None)
        elif self.pending and self.pending[0] is item:
            self.pending.popleft()
        elif self.unspooled and self.unspooled[0] is item:
            self.unspooled.popleft()
        elif self.spool is not None and (record := self.spool.head()) is not None \
                and record.topic == item.topic and record.payload == item.payload:
            # Read from disk, or moved there by a spill while it was being published.
            self.spool.ack()
        # Otherwise it was dropped to make room while being published: nothing left to remove.

    def close(self) -> None:
        """On shutdown: samples still in memory go to disk, so the next run sends them."""
        if self.spool is None:
            return
        self._spill()
        while self.unspooled and self._append(self.unspooled[0]):
            self.unspooled.popleft()
        if self.unspooled:
            log.error("shutting down with %d samples the spool could not take; they are lost", len(self.unspooled))
        self.spool.close()
