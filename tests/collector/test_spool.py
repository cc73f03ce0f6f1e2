"""No sample lost (issue #5): the on-disk spool on its own, the outbox that routes samples through it,
and a real collector riding out a 30 s broker outage and a restart of its own."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbus.collector.outbox import Outbox
from bmsbus.collector.service import Collector
from bmsbus.collector.spool import Spool, SpoolError, encode_record
from bmsbus.shared import bus as bus_module
from bmsbus.shared.bus import Backoff, Bus, run_connected
from bmsbus.shared.config import MqttConfig, parse_config
from support.services import running
from support.procs import Mosquitto

ROOT = "bmsbus/v1/t"


def payload(i: int) -> bytes:
    return json.dumps({"seq": i, "pad": "x" * 40}).encode()


def drain(spool: Spool) -> list[int]:
    """Read and acknowledge everything, as the publisher does; the seqs in the order they came back."""
    out = []
    while (record := spool.head()) is not None:
        out.append(json.loads(record.payload)["seq"])
        spool.ack()
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


# --- the spool ----------------------------------------------------------------------------------------

def test_records_come_back_in_order_across_segments_and_the_files_go_when_sent(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000, segment_bytes=1000) as spool:
        for i in range(300):
            spool.append("a/sample", payload(i))
        assert len(segments(tmp_path)) > 10, "small segments rotate"
        assert spool.bytes_on_disk == sum(p.stat().st_size for p in segments(tmp_path))
        assert (spool.spooled, spool.pending_records) == (300, 300)
        half = []
        for _ in range(150):
            half.append(json.loads(spool.head().payload)["seq"])  # type: ignore[union-attr]
            spool.ack()
        for i in range(300, 320):  # the writer keeps going while the reader catches up
            spool.append("a/sample", payload(i))
        assert half + drain(spool) == list(range(320))
        assert spool.replayed == 320 and spool.pending_records == 0
        assert spool.bytes_on_disk == 0 and segments(tmp_path) == [], "a drained spool leaves no files"
        assert not (tmp_path / "cursor").exists()


def test_a_full_spool_drops_the_oldest_segment_and_counts_every_record_in_it(tmp_path: Path) -> None:
    record_size = len(encode_record("a/sample", payload(0)))
    with Spool(tmp_path, 20 * record_size, segment_bytes=4 * record_size) as spool:
        for i in range(100):
            spool.append("a/sample", payload(i))
            on_disk = sum(p.stat().st_size for p in segments(tmp_path))
            assert on_disk == spool.bytes_on_disk <= 20 * record_size
        kept = drain(spool)
    assert kept == list(range(100 - len(kept), 100)), "the newest survive, contiguous and in order"
    assert spool.dropped_oldest == 100 - len(kept) > 0
    assert len(kept) >= 15, "only whole oldest segments go, not more"


def test_dropping_counts_only_unsent_records_of_a_half_read_segment(tmp_path: Path) -> None:
    record_size = len(encode_record("a/sample", payload(0)))
    with Spool(tmp_path, 8 * record_size, segment_bytes=4 * record_size) as spool:
        for i in range(8):
            spool.append("a/sample", payload(i))
        for _ in range(3):  # 0, 1, 2 sent
            spool.head()
            spool.ack()
        spool.append("a/sample", payload(8))  # no room: the first segment (0-3) goes, only 3 was unsent
        assert spool.dropped_oldest == 1
        assert drain(spool) == [4, 5, 6, 7, 8]


def test_a_torn_tail_from_a_power_cut_is_skipped_and_counted(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000) as spool:
        for i in range(10):
            spool.append("a/sample", payload(i))
    (seg,) = segments(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[:-7] + b"\0" * 512)  # half of record 9 made it, then zeroed blocks
    with Spool(tmp_path, 1_000_000) as spool:
        assert spool.corrupt_records == 1
        assert spool.pending_records == 9
        spool.append("a/sample", payload(10))  # a new run writes a new segment, never after the tear
        assert drain(spool) == [*range(9), 10]
    assert len(segments(tmp_path)) == 0


def test_a_flipped_bit_loses_only_that_record(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000) as spool:
        for i in range(10):
            spool.append("a/sample", payload(i))
    (seg,) = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    size = len(encode_record("a/sample", payload(0)))
    data[4 * size + size // 2] ^= 0x10  # inside record 4's payload
    data[7 * size + 3] ^= 0xFF  # record 7's length field
    seg.write_bytes(bytes(data))
    with Spool(tmp_path, 1_000_000) as spool:
        assert spool.corrupt_records == 2
        assert drain(spool) == [0, 1, 2, 3, 5, 6, 8, 9]


@settings(max_examples=60, deadline=None)
@given(damage=st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=40)), max_size=6),
       cut=st.integers(0, 200))
def test_any_damage_never_crashes_and_never_reorders(tmp_path_factory, damage, cut) -> None:
    directory = tmp_path_factory.mktemp("spool")
    record_size = len(encode_record("a/sample", payload(0)))
    with Spool(directory, 1_000_000, segment_bytes=2000) as spool:
        for i in range(60):
            spool.append("a/sample", payload(i))
    files = segments(directory)
    for n, (where, junk) in enumerate(damage):
        seg = files[n % len(files)]
        data = bytearray(seg.read_bytes())
        pos = where % len(data)
        data[pos:pos + len(junk)] = junk
        seg.write_bytes(bytes(data))
    files[-1].write_bytes(files[-1].read_bytes()[:-cut or None])  # a torn tail on top
    (directory / "cursor").write_bytes(b"\xff garbage")  # unreadable: replay from the start
    with Spool(directory, 1_000_000, segment_bytes=2000) as spool:
        got = drain(spool)
    assert got == sorted(set(got)) and set(got) <= set(range(60)), "a subsequence of what was written"
    # 40 bytes of junk touch at most two records; the cut at most ceil(cut / size) of them.
    assert len(got) >= 60 - 2 * len(damage) - -(-cut // record_size)
    if not damage and not cut:
        assert got == list(range(60)) and spool.corrupt_records == 0


def test_a_restart_resumes_at_the_cursor_and_new_records_follow(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000, segment_bytes=500) as spool:
        for i in range(20):
            spool.append("a/sample", payload(i))
        for _ in range(7):
            spool.head()
            spool.ack()
    with Spool(tmp_path, 1_000_000, segment_bytes=500) as spool:
        assert spool.pending_records == 13
        spool.append("a/sample", payload(20))
        assert drain(spool) == list(range(7, 21))


def test_a_cursor_off_a_record_boundary_replays_rather_than_skips(tmp_path: Path) -> None:
    size = len(encode_record("a/sample", payload(0)))
    with Spool(tmp_path, 1_000_000) as spool:
        for i in range(5):
            spool.append("a/sample", payload(i))
    (seg,) = segments(tmp_path)
    position = f"{int(seg.stem)} {2 * size + 5}"
    (tmp_path / "cursor").write_text(f"{position} {zlib.crc32(position.encode()):08x}\n")
    with Spool(tmp_path, 1_000_000) as spool:
        assert spool.corrupt_records == 0
        assert drain(spool) == [2, 3, 4]


def test_a_damaged_cursor_replays_everything_rather_than_deleting_segments(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000, segment_bytes=500) as spool:
        for i in range(20):
            spool.append("a/sample", payload(i))
        for _ in range(9):
            spool.head()
            spool.ack()
    good = (tmp_path / "cursor").read_text().split()
    before = segments(tmp_path)
    assert int(good[0]) == int(before[0].stem) and int(good[1]) > 0, "the cursor is inside the oldest segment"
    for bad in (f"{int(good[0]) + 1} {good[1]} {good[2]}",  # a changed digit fails the CRC
                f"{good[0]} {good[1]} 00000000", "", "1 2", "x y z", "\x00" * 30):
        (tmp_path / "cursor").write_text(bad)
        with Spool(tmp_path, 1_000_000, segment_bytes=500) as spool:
            head = spool.head()
            assert head is not None and json.loads(head.payload)["seq"] < 9, f"{bad!r}: replays from the start"
        assert segments(tmp_path) == before, f"{bad!r}: no segment deleted on a bad cursor's word"
    (tmp_path / "cursor").write_text(" ".join(good))
    with Spool(tmp_path, 1_000_000, segment_bytes=500) as spool:
        assert drain(spool) == list(range(9, 20)), "the good cursor still resumes exactly"


def test_two_collectors_cannot_share_a_spool_and_the_second_runs_from_memory(tmp_path: Path) -> None:
    with Spool(tmp_path, 1_000_000):
        with pytest.raises(SpoolError, match="in use"):
            Spool(tmp_path, 1_000_000)
        box = Outbox.with_spool(tmp_path, 1_000_000)
        assert box.spool is None and "in use" in (box.spool_error or "")
        box.put("a/sample", b"1")
        assert [o.payload for o in box.pending] == [b"1"]


# --- the outbox in front of it -------------------------------------------------------------------------

async def test_outbox_uses_memory_while_connected_and_disk_otherwise_in_one_order(tmp_path: Path) -> None:
    box = Outbox(spool=Spool(tmp_path, 1_000_000), spill_after=5)
    spool = box.spool
    assert spool is not None
    box.set_connected(True)
    box.put("a/link", b"up", retain=True)
    for i in range(3):
        box.put("a/sample", payload(i))
    assert len(box.pending) == 3 and spool.spooled == 0, "keeping up: nothing touches the disk"

    retained = await box.next()
    assert retained.retain
    box.done(retained)
    in_flight = await box.next()  # sample 0, being published when the broker goes away
    box.set_connected(False)
    assert not box.pending and spool.pending_records == 3, "a disconnect moves memory to disk"
    for i in range(3, 10):
        box.put("a/sample", payload(i))
    box.done(in_flight)  # its PUBACK arrives after all: it leaves the spool, no duplicate
    box.set_connected(True)
    for i in range(10, 12):  # connected again, but older samples are still on disk: these queue behind
        box.put("a/sample", payload(i))
    got = []
    while box.pending or box.unspooled or not spool.empty():
        item = await box.next()
        got.append(json.loads(item.payload)["seq"])
        box.done(item)
    assert got == list(range(1, 12))
    assert spool.replayed == 12 and spool.bytes_on_disk == 0
    box.put("a/sample", payload(12))
    assert len(box.pending) == 1, "drained: back to memory"
    for i in range(13, 20):  # the publisher stalls: past spill_after the backlog goes to disk, in order
        box.put("a/sample", payload(i))
    assert spool.pending_records == 8 and not box.pending
    box.close()
    with Spool(tmp_path, 1_000_000) as reopened:
        assert drain(reopened) == list(range(12, 20))


async def test_samples_in_memory_at_shutdown_are_kept_for_the_next_run(tmp_path: Path) -> None:
    box = Outbox(spool=Spool(tmp_path, 1_000_000))
    box.set_connected(True)
    for i in range(3):
        box.put("a/sample", payload(i))
    assert box.spool is not None and box.spool.spooled == 0 and len(box.pending) == 3
    box.close()
    box = Outbox(spool=Spool(tmp_path, 1_000_000))
    box.set_connected(True)
    box.put("a/sample", payload(3))  # a new run: behind the old run's samples, not in front
    assert not box.pending
    got = []
    while box.spool is not None and not box.spool.empty():
        item = await box.next()
        got.append(json.loads(item.payload)["seq"])
        box.done(item)
    assert got == [0, 1, 2, 3]
    box.close()


def test_outbox_keeps_order_while_the_disk_refuses_writes(tmp_path: Path) -> None:
    """A real write failure: the file size limit (RLIMIT_FSIZE: short writes, then EFBIG) in a child
    process. Samples that cannot be written wait in memory behind the spool and reach it, in order, once
    writes work again."""
    script = textwrap.dedent(f"""
        import json, resource, signal, asyncio
        from pathlib import Path
        from bmsbus.collector.outbox import Outbox
        from bmsbus.collector.spool import Spool
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        box = Outbox(spool=Spool(Path({str(tmp_path)!r}), 1_000_000, segment_bytes=10_000), disk_retry_after=0)
        put = lambda i: box.put("a/sample", json.dumps({{"seq": i, "pad": "x" * 40}}).encode())
        for i in range(10):
            put(i)
        # The segment may grow by 30 more bytes: each write gets a third of a record through, then EFBIG.
        resource.setrlimit(resource.RLIMIT_FSIZE, (box.spool.bytes_on_disk + 30, hard))
        for i in range(10, 20):
            put(i)
        stuck = (box.spool.write_errors, len(box.unspooled), box.spool.spooled)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        for i in range(20, 25):
            put(i)
        box.set_connected(True)
        got = []
        async def take():
            return await box.next()
        while box.pending or box.unspooled or not box.spool.empty():
            item = asyncio.run(take())
            got.append(json.loads(item.payload)["seq"])
            box.done(item)
        print(json.dumps({{"stuck": stuck, "got": got, "left": len(box.unspooled),
                          "corrupt": box.spool.corrupt_records}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    write_errors, unspooled, spooled = result["stuck"]
    assert (write_errors, unspooled, spooled) == (10, 10, 10), "every write failed; the samples waited in memory"
    assert result["got"] == list(range(25)) and result["left"] == 0
    assert result["corrupt"] == 0, "the partial records were cut off, not left for the reader to trip over"


# --- a real collector -------------------------------------------------------------------------------------

def make_collector(mqtt: MqttConfig, spool_dir: Path, sample_period: float, devices: int = 1) -> Collector:
    cfg = parse_config({
        "site": "t",
        "collector": {"id": "c1", "sample_period": sample_period, "spool_dir": str(spool_dir)},
        "devices": [{"alias": f"p{n}", "type": "simulated", "protocol": "jk_32s", "cells": 8}
                    for n in range(1, devices + 1)]})
    cfg.mqtt = mqtt
    return Collector(cfg)


@contextlib.asynccontextmanager
async def persistent_consumer(mqtt: MqttConfig, topic_filter: str):
    """Subscribed with a persistent session from before the first sample to after the last: the broker
    queues for it while it is away, so what it records is what the collector delivered."""
    seen: list[tuple[str, str, int]] = []  # (bms, boot, seq) in arrival order
    subscribed = asyncio.Event()

    async def consume(bus: Bus) -> None:
        await bus.subscribe(topic_filter)
        subscribed.set()
        async for m in bus.messages():
            sample = json.loads(m.payload)
            seen.append((sample["bms"], sample["boot"], sample["seq"]))

    task = asyncio.create_task(run_connected(
        "consumer", lambda: Bus(mqtt, client_id="test-spool-consumer", persistent=True), consume,
        backoff=Backoff(first=0.2, cap=0.5)))
    await asyncio.wait_for(subscribed.wait(), 10)
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    # The collector's reconnect backoff grows to 19 s by the end of a 30 s outage; this test is about what
    # happens after the reconnect, not about waiting for it, so the collector retries every 0.5-1 s.
    monkeypatch.setattr(bus_module, "Backoff", functools.partial(Backoff, first=1.0, factor=1.0, cap=1.0))


@pytest.mark.broker
async def test_a_30_s_broker_outage_at_1_hz_loses_no_sample(tmp_path: Path, mosquitto: Mosquitto,
                                                              fast_reconnect: None) -> None:
    """The issue's proof: every seq from the first to the last arrives, in order, and the outage's samples
    went through the disk."""
    mqtt = MqttConfig(host="127.0.0.1", port=mosquitto.port)
    spool_dir = tmp_path / "spool"
    async with persistent_consumer(mqtt, f"{ROOT}/bms/p1/sample") as seen:
        collector = make_collector(mqtt, spool_dir, sample_period=1.0)
        spool = collector.outbox.spool
        assert spool is not None
        async with running(collector):
            await wait_until(lambda: len(seen) >= 3, 20, "live samples")
            # Only samples taken before the first connect go through the disk; live ones stay in memory.
            assert spool.spooled <= 3 and spool.empty()
            mosquitto.stop()
            outage_started = time.monotonic()
            await asyncio.sleep(30)
            assert spool.pending_records >= 27, f"one sample a second waits on disk ({spool.pending_records})"
            assert segments(spool_dir) and spool.bytes_on_disk > 0
            taken_in_outage = collector.runners["p1"].seq
            mosquitto.start()  # same port, same persistence directory
            await wait_until(lambda: len(set(seen)) >= taken_in_outage + 3 and spool.empty(), 20, "the backlog")
            outage = time.monotonic() - outage_started
            assert spool.bytes_on_disk == 0 and segments(spool_dir) == [], "drained spool files are removed"
    delivered = list(dict.fromkeys(seq for _, _, seq in seen))
    assert delivered == list(range(len(delivered))), f"gaps or reordering: {delivered}"
    assert len(delivered) >= taken_in_outage + 3 >= 33
    assert spool.replayed >= 27 and spool.dropped_oldest == spool.corrupt_records == 0
    assert collector.outbox.dropped == 0 and not collector.outbox.unspooled
    print(f"outage and catch-up {outage:.1f} s: {len(delivered)} samples delivered, {spool.spooled} spooled, "
          f"{spool.replayed} replayed, {len(seen) - len(set(seen))} duplicates")


@pytest.mark.broker
async def test_samples_spooled_before_a_collector_restart_are_sent_first(tmp_path: Path, mosquitto: Mosquitto,
                                                                         fast_reconnect: None) -> None:
    """Broker down, collector stopped with a backlog on disk, broker back, a new collector (new boot):
    the old boot's samples arrive first and complete, then the new boot's — per device, in order."""
    mqtt = MqttConfig(host="127.0.0.1", port=mosquitto.port)
    spool_dir = tmp_path / "spool"
    async with persistent_consumer(mqtt, f"{ROOT}/bms/+/sample") as seen:
        mosquitto.stop()
        first = make_collector(mqtt, spool_dir, sample_period=0.2, devices=2)
        async with running(first):
            await wait_until(lambda: all(r.seq >= 5 for r in first.runners.values()), 20, "samples on disk")
        spooled = {bms: r.seq for bms, r in first.runners.items()}
        assert first.outbox.spool is not None and first.outbox.spool.spooled == sum(spooled.values())
        mosquitto.start()
        second = make_collector(mqtt, spool_dir, sample_period=0.2, devices=2)
        assert second.outbox.spool is not None and second.outbox.spool.pending_records == sum(spooled.values())
        async with running(second):
            await wait_until(lambda: all((bms, second.boot, 5) in seen for bms in spooled), 20,
                             "the new boot's samples")
    for bms, count in spooled.items():
        arrivals = list(dict.fromkeys((boot, seq) for b, boot, seq in seen if b == bms))
        old = [(first.boot, seq) for seq in range(count)]
        assert arrivals[:count] == old, f"{bms}: the old boot's samples, complete and first"
        new = [seq for boot, seq in arrivals[count:]]
        assert new[:6] == list(range(6)) and all(boot == second.boot for boot, _ in arrivals[count:])
