"""Durability: snapshot + journal replay gives the state at the moment of a crash, bit for bit."""

from __future__ import annotations

import math
from pathlib import Path

from bmsbus.aggregator.service import Aggregator
from bmsbus.aggregator.store import StateStore, encode_sample
from bmsbus.shared.bus import Message
from bmsbus.shared.config import parse_config
from helpers import T0, trace


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock) -> Aggregator:
    cfg = parse_config({
        "site": "t", "devices": [{"alias": a, "type": "simulated"} for a in ("a", "b")],
        "aggregator": {"state_dir": str(tmp_path / "state"), "reorder_window": 2.0,
                       "groups": [{"id": "g", "members": ["a", "b"]}]}})
    agg = Aggregator(cfg, clock=clock)
    agg.restore()
    return agg


def messages():
    a = trace("a", lambda t: 400 * math.sin(t / 30), n=600, cell_voltages=[3.3, 3.4], temperatures=[20.0], soc=50.0)
    b = trace("b", lambda t: 100 + t / 10, n=600, cell_voltages=[3.3, 3.31])
    for sa, sb in zip(a, b, strict=True):
        yield sa.ts, Message("bmsbus/v1/t/bms/a/sample", sa.to_json(), False)
        yield sb.ts, Message("bmsbus/v1/t/bms/b/sample", sb.to_json(), False)


def feed(agg: Aggregator, clock: Clock, msgs) -> None:
    for ts, m in msgs:
        clock.now = ts + 0.05
        agg.handle(m)
        if int(ts) % 7 == 0:
            clock.now += 3  # a pause long enough to flush the reorder window
            agg.tick()


def snapshot_of(agg: Aggregator) -> dict:
    return {id: agg.engine.state(id, T0 + 10_000).model_dump() for id in agg.engine.ids()} | {
        f"{id}/control": agg.engine.control(id, T0 + 10_000).model_dump() for id in ("a", "b", "g")}


def test_a_crash_at_any_point_loses_nothing_processed(tmp_path: Path) -> None:
    msgs = list(messages())
    clock = Clock()
    straight = make(tmp_path / "straight", clock)
    feed(straight, clock, msgs)
    expected = snapshot_of(straight)

    clock = Clock()
    first = make(tmp_path / "crashy", clock)
    feed(first, clock, msgs[:333])
    first.save()  # a snapshot mid-way, then more journal
    feed(first, clock, msgs[333:777])
    # kill -9: no save, no close. The next process starts from the files alone.
    second = make(tmp_path / "crashy", clock)
    feed(second, clock, msgs[700:])  # the broker redelivers a few it had already processed
    assert snapshot_of(second) == expected


def test_a_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.load()
    store.append(encode_sample(1.0, b'{"a":1}'))
    store.append(b"S 2.0 {\"trunc")  # the process died mid-write
    store.close()
    _, events = StateStore(tmp_path).load()
    assert [(e.kind, e.now, e.payload) for e in events] == [("S", 1.0, b'{"a":1}')]


def test_a_snapshot_never_replays_the_journal_it_contains(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.load()
    store.append(encode_sample(1.0, b"{}"))
    old = sorted(tmp_path.glob("journal-*.log"))
    data = {p: p.read_bytes() for p in old}
    store.snapshot({"x": 1})
    for p, b in data.items():  # a crash right after the snapshot, before the old journal was deleted
        p.write_bytes(b)
    engine, events = StateStore(tmp_path).load()
    assert engine == {"x": 1} and events == []


def test_an_unreadable_snapshot_is_kept_and_the_service_starts(tmp_path: Path) -> None:
    (tmp_path / "aggregator-state.json").write_text("{garbage")
    engine, _ = StateStore(tmp_path).load()
    assert engine is None and (tmp_path / "aggregator-state.json.unreadable").exists()
