"""battery/<id>/meters/reset: computed meters and cycle counters to zero, once per id, durable, and never
undone by samples delivered again after it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bmsbus.aggregator.engine import Engine
from bmsbus.aggregator.service import Aggregator
from bmsbus.shared.bus import Message
from bmsbus.shared.config import AggregatorConfig, parse_config
from bmsbus.shared.models import MetersReset
from helpers import T0, close, sample

KWH = 3.6e6
METERS = ("energy_in_kwh", "energy_out_kwh", "energy_net_kwh", "charge_in_ah", "charge_out_ah", "charge_net_ah")


def reset(id: str = "r1") -> MetersReset:
    return MetersReset(id=id, issued=T0, expires=T0 + 100_000)


def samples(bms: str, lo: int, hi: int, watts: float = 1000.0) -> list:
    # SoC moves 0.5 % per sample, so cycles_soc counts 0.0025 per interval; the BMS's own counter is 17.
    return [sample(bms, T0 + i, i, power=watts, current=watts / 50, voltage=50.0, soc=20.0 + 0.5 * i,
                   capacity=100.0, cycles=17) for i in range(lo, hi)]


def feed(eng: Engine, items: list) -> None:
    for s in items:
        eng.on_sample(s, s.ts + 0.1)


def meters(eng: Engine, id: str) -> dict[str, Any]:
    st = eng.state(id, T0).model_dump()
    return {k: st[k] for k in (*METERS, "cycles_soc", "cycles_throughput", "cycles")}


def test_a_pack_reset_zeroes_its_meters_replays_change_nothing_and_it_grows_again_from_zero() -> None:
    eng = Engine(AggregatorConfig(reorder_window=0.0))
    feed(eng, samples("p", 0, 101))
    before = meters(eng, "p")
    assert close(before["energy_in_kwh"], 100 * 1000 / KWH) and close(before["cycles_soc"], 100 * 0.0025)
    assert eng.reset_meters("p", reset(), T0 + 101).ok
    after = meters(eng, "p")
    assert {k: after[k] for k in (*METERS, "cycles_soc", "cycles_throughput")} == dict.fromkeys(
        (*METERS, "cycles_soc", "cycles_throughput"), 0.0)
    assert after["cycles"] == 17  # the BMS's own counter is not ours to reset
    assert "p" in eng.dirty
    # A collector replaying its spool, a QoS 1 redelivery: all of it was counted before the reset.
    feed(eng, samples("p", 0, 101))
    assert meters(eng, "p") == after
    # New samples count from zero; the interval from the last point before the reset counts after it.
    feed(eng, samples("p", 101, 151))
    grown = meters(eng, "p")
    assert close(grown["energy_in_kwh"], 50 * 1000 / KWH) and close(grown["charge_in_ah"], 50 * 20 / 3600)
    assert grown["energy_out_kwh"] == 0.0 and close(grown["cycles_soc"], 50 * 0.0025)
    assert close(grown["cycles_throughput"], 50 * 20 / 3600 / 2 / 100)


def test_a_reset_is_applied_once_per_id_and_never_after_expiry() -> None:
    eng = Engine(AggregatorConfig(reorder_window=0.0))
    feed(eng, samples("p", 0, 11))
    assert eng.reset_meters("p", reset("once"), T0 + 11).ok
    feed(eng, samples("p", 11, 21))
    grown = meters(eng, "p")
    assert grown["energy_in_kwh"] > 0
    assert eng.reset_meters("p", reset("once"), T0 + 21).reason == "duplicate request id (already applied)"
    late = MetersReset(id="late", issued=T0, expires=T0 + 5)
    assert eng.reset_meters("p", late, T0 + 21).reason == "expired 16.0 s ago"
    assert "unknown battery 'nope'" in eng.reset_meters("nope", reset("x"), T0 + 21).reason
    assert meters(eng, "p") == grown


def test_a_group_reset_leaves_the_packs_alone_and_a_pack_reset_leaves_the_group_alone() -> None:
    eng = Engine(AggregatorConfig(reorder_window=0.0, groups=[{"id": "g", "members": ["a", "b"]}]))
    for i in range(0, 41):
        feed(eng, samples("a", i, i + 1) + samples("b", i, i + 1, watts=500.0))
    packs_before = {id: meters(eng, id) for id in ("a", "b")}
    g = meters(eng, "g")
    assert close(g["energy_in_kwh"], 40 * 1500 / KWH) and close(g["cycles_soc"], 40 * 0.0025)
    assert eng.reset_meters("g", reset("g1"), T0 + 41).ok
    g = meters(eng, "g")
    assert all(g[k] == 0.0 for k in (*METERS, "cycles_soc", "cycles_throughput")), g
    assert {id: meters(eng, id) for id in ("a", "b")} == packs_before
    assert eng.reset_meters("a", reset("a1"), T0 + 41).ok
    assert meters(eng, "g") == g and meters(eng, "b") == packs_before["b"]
    for i in range(41, 61):
        feed(eng, samples("a", i, i + 1) + samples("b", i, i + 1, watts=500.0))
    g, a = meters(eng, "g"), meters(eng, "a")
    assert close(g["energy_in_kwh"], 20 * 1500 / KWH) and close(g["cycles_soc"], 20 * 0.0025)
    assert close(a["energy_in_kwh"], 20 * 1000 / KWH)


# --- durability through the service's store -----------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def service(state: Path, clock: Clock) -> Aggregator:
    cfg = parse_config({
        "site": "t", "devices": [{"alias": a, "type": "simulated"} for a in ("a", "b")],
        "aggregator": {"state_dir": str(state), "reorder_window": 2.0, "groups": [{"id": "g", "members": ["a", "b"]}]}})
    agg = Aggregator(cfg, clock=clock)
    agg.restore()
    return agg


def messages(lo: int, hi: int) -> list[Message]:
    out = []
    for i in range(lo, hi):
        for bms, watts in (("a", 1000.0), ("b", -400.0)):
            (s,) = samples(bms, i, i + 1, watts)
            out.append(Message(f"bmsbus/v1/t/bms/{bms}/sample", s.to_json(), False))
    return out


def run(agg: Aggregator, clock: Clock, msgs: list[Message]) -> None:
    for m in msgs:
        clock.now = json.loads(m.payload)["ts"] + 0.05
        agg.handle(m)


def reset_all(agg: Aggregator, clock: Clock) -> None:
    for id in ("a", "g"):
        agg.handle(Message(f"bmsbus/v1/t/battery/{id}/meters/reset", reset(f"reset-{id}").to_json(), False))
    results = [json.loads(p) for t, p, _ in agg.bus_out if t.endswith("/cmd/result")]
    assert [(r["bms"], r["status"]) for r in results] == [("a", "ok"), ("g", "ok")]


def outputs(agg: Aggregator) -> dict:
    return {id: agg.engine.state(id, T0 + 10_000).model_dump() for id in ("a", "b", "g")}


@pytest.mark.parametrize("snapshot_works", [True, False], ids=["snapshot", "journal-only"])
def test_a_restart_after_a_reset_neither_brings_old_totals_back_nor_double_counts(tmp_path: Path, monkeypatch,
                                                                                  snapshot_works: bool) -> None:
    clock = Clock()
    straight = service(tmp_path / "straight", clock)
    run(straight, clock, messages(0, 60))
    reset_all(straight, clock)
    run(straight, clock, messages(60, 120))
    expected = outputs(straight)
    # Only what was integrated after the reset: samples 58 and 59 were still held in the 2 s reorder window
    # at the reset, so a counts the intervals from 57 (the last point integrated before it) to 117.
    assert close(expected["a"]["energy_in_kwh"], 60 * 1000 / KWH)
    assert expected["b"]["energy_out_kwh"] > 60 * 400 / KWH  # b was not reset

    clock = Clock()
    first = service(tmp_path / "crashy", clock)
    run(first, clock, messages(0, 60))
    if not snapshot_works:
        def broken(_engine: dict) -> None:
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(first.store, "snapshot", broken)
    reset_all(first, clock)
    monkeypatch.undo()
    run(first, clock, messages(60, 90))
    # kill -9 (no save); the broker then delivers again everything from before the reset, and the rest.
    second = service(tmp_path / "crashy", clock)
    assert second.engine.state("a", T0).energy_in_kwh < 31 * 1000 / KWH
    run(second, clock, messages(0, 120))
    assert outputs(second) == expected
