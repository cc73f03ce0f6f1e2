"""Meters on synthetic traces with closed-form integrals: relative error < 1e-9."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbus.aggregator.engine import Engine
from bmsbus.aggregator.meters import Integral, Meters, Point, Reorder, trapezoid_split
from bmsbus.shared.config import AggregatorConfig
from helpers import T0, close, sample, trace

KWH = 3.6e6


def run(samples, *, dt_max=60.0, reorder_window=0.0, groups=(), flush=True) -> Engine:
    eng = Engine(AggregatorConfig(dt_max=dt_max, reorder_window=reorder_window, groups=list(groups)))
    last = T0
    for s in samples:
        eng.on_sample(s, now=s.ts + 0.1)
        last = max(last, s.ts)
    if flush:
        eng.tick(now=last + 1000.0)  # long after: everything held is released
    return eng


def readings(eng: Engine, id: str = "p") -> dict:
    return eng.state(id, now=T0).model_dump()


@pytest.mark.parametrize(("name", "power", "n", "dt", "e_in", "e_out"), [
    ("constant charge", lambda t: 1234.5, 3601, 1.0, 1234.5 * 3600, 0.0),
    ("constant discharge", lambda t: -800.0, 1001, 0.5, 0.0, 800.0 * 500),
    ("ramp up", lambda t: 10.0 + 2.0 * t, 1001, 1.0, 10.0 * 1000 + 1000.0 ** 2, 0.0),
    # a zigzag 300 / -100 at every sample: each interval splits at the zero crossing exactly
    ("zigzag sign flips", lambda t: 300.0 if round(t) % 2 == 0 else -100.0, 1001, 1.0, 112.5 * 1000, 12.5 * 1000),
    # a ramp through zero between samples (crossing at t = 100.5)
    ("ramp through zero", lambda t: 201.0 - 2.0 * t, 201, 1.0, 100.5 ** 2, 99.5 ** 2),
    # sine on a positive offset over whole periods: the trapezoid rule is exact to rounding here
    ("sine", lambda t: 500.0 + 400.0 * math.sin(2 * math.pi * t / 60.0), 6001, 1.0, 500.0 * 6000, 0.0),
])
def test_closed_form_traces(name, power, n, dt, e_in, e_out) -> None:
    eng = run(trace("p", power, n=n, dt=dt, voltage=50.0))
    r = readings(eng)
    assert close(r["energy_in_kwh"], e_in / KWH) if e_in else r["energy_in_kwh"] == 0.0
    assert close(r["energy_out_kwh"], e_out / KWH) if e_out else r["energy_out_kwh"] == 0.0
    assert close(r["energy_net_kwh"], (e_in - e_out) / KWH, abs_=1e-15)
    assert close(r["charge_in_ah"], e_in / 50.0 / 3600) if e_in else r["charge_in_ah"] == 0.0
    assert close(r["charge_out_ah"], e_out / 50.0 / 3600) if e_out else r["charge_out_ah"] == 0.0


def test_pure_sine_nets_to_zero() -> None:
    eng = run(trace("p", lambda t: 1000.0 * math.sin(2 * math.pi * t / 100.0), n=10001))
    r = readings(eng)
    assert abs(r["energy_net_kwh"]) < 1e-9 * r["energy_in_kwh"]
    assert close(r["energy_in_kwh"], r["energy_out_kwh"])


def test_gaps_longer_than_dt_max_are_not_bridged() -> None:
    def power(t: float) -> float | None:
        return 100.0 + t

    samples = [s for s in trace("p", power, n=301) if not (100 < s.ts - T0 < 200)]  # hole of 100 s
    eng = run(samples, dt_max=60.0)
    expected = sum(100.0 + t for t in (0.5 + k for k in range(300)) if not (100 <= t - 0.5 < 200))
    assert close(readings(eng)["energy_in_kwh"], expected / KWH)
    assert eng.packs["p"].meters.energy.gaps == 1


def test_a_missing_value_spans_the_hole_and_never_poisons() -> None:
    samples = list(trace("p", lambda t: 100.0 + t, n=101))
    # Sample 50 lost its power and current (a BMS that did not report them): the interval spans 49..51.
    samples[50] = sample("p", samples[50].ts, 50, voltage=50.0, soc=40.0)
    eng = run(samples)
    assert close(readings(eng)["energy_in_kwh"], (100.0 * 100 + 100 ** 2 / 2) / KWH)
    integral = Integral()
    for ts, v in [(0, 1.0), (1, float("nan")), (2, 1.0), (3, float("inf")), (4, 1.0)]:
        integral.add(ts, v, 60.0)
    assert integral.inflow.value == 4.0 and integral.net == 4.0


def test_duplicates_and_replays_change_nothing() -> None:
    samples = list(trace("p", lambda t: 50.0 * math.cos(t / 10.0), n=500))
    once = readings(run(samples))
    replayed = samples + samples[100:300] + samples[:10] + samples[-5:]
    eng = run(replayed)
    assert readings(eng) == once
    # all refused; recent ones are recognised as duplicates, older ones only as late
    assert eng.refused["duplicate"] + eng.refused["late"] == 215 and eng.refused["duplicate"] == 5


def test_out_of_order_within_the_window_is_put_in_order() -> None:
    samples = list(trace("p", lambda t: 40.0 * math.sin(t / 7.0), n=400))
    ordered = readings(run(samples, reorder_window=5.0))
    rng = random.Random(7)
    shuffled = samples[:]
    for i in range(0, len(shuffled) - 3, 3):  # swap within 3 s: inside the 5 s window
        chunk = shuffled[i:i + 3]
        rng.shuffle(chunk)
        shuffled[i:i + 3] = chunk
    eng = run(shuffled, reorder_window=5.0)
    assert readings(eng) == ordered
    assert not eng.refused


def test_later_than_the_window_is_dropped_and_counted_not_subtracted() -> None:
    samples = list(trace("p", lambda t: 100.0, n=100))
    late = samples.pop(20)
    eng = run(samples, reorder_window=2.0, flush=False)
    before = readings(eng)["energy_in_kwh"]
    eng.on_sample(late, now=late.ts + 100)
    assert eng.refused["late"] == 1
    assert readings(eng)["energy_in_kwh"] == before


def test_restart_mid_trace_gives_the_same_totals() -> None:
    samples = list(trace("p", lambda t: 300.0 * math.sin(t / 13.0) + 20.0, n=2000, soc=50.0))
    straight = run(samples, reorder_window=3.0, groups=[{"id": "g", "members": ["p"]}])
    cfg = AggregatorConfig(reorder_window=3.0, groups=[{"id": "g", "members": ["p"]}])
    first = Engine(cfg)
    for s in samples[:1234]:
        first.on_sample(s, now=s.ts + 0.1)
    dumped = json.loads(json.dumps(first.dump()))  # through JSON, as on disk
    second = Engine(cfg)
    second.load(dumped)
    for s in samples[1200:]:  # overlapping: the broker redelivers some
        second.on_sample(s, now=s.ts + 0.1)
    second.tick(now=samples[-1].ts + 1000)
    assert readings(second) == readings(straight)
    assert readings(second, "g") == readings(straight, "g")


def test_soc_cycles_ignore_jumps() -> None:
    m = Meters(60.0)
    socs = [100, 80, 60, 40, 20, 0, 20, 40, 60, 80, 100, 50, 100]  # 100 -> 0 -> 100 is one cycle; 100->50 a jump
    for i, soc in enumerate(socs):
        m.add(Point(i, None, None, soc))
    assert close(m.readings()["cycles_soc"], 1.0)


def test_throughput_cycles_and_time_to_go() -> None:
    samples = list(trace("p", lambda t: -500.0, n=3601, capacity=100.0, charge=50.0))
    r = readings(run(samples))
    assert close(r["charge_out_ah"], 10.0)
    assert close(r["cycles_throughput"], 10.0 / 2 / 100.0)
    assert close(r["time_to_empty"], 50.0 / 10.0 * 3600)
    assert r["time_to_full"] is None


def test_trapezoid_split_is_exact_at_the_crossing() -> None:
    assert trapezoid_split(3.0, -1.0, 4.0) == (4.5, 0.5)
    assert trapezoid_split(-1.0, 3.0, 4.0) == (4.5, 0.5)
    assert trapezoid_split(0.0, 0.0, 1.0) == (0.0, 0.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 100.0), st.one_of(st.none(), st.floats(-1e4, 1e4))), min_size=2,
                max_size=60))
def test_any_trace_in_out_grow_and_net_is_the_signed_trapezoid(steps) -> None:
    integral = Integral()
    ts, ins, outs = 0.0, [], []
    signed = 0.0
    last = None
    for dt, v in steps:
        ts += dt
        integral.add(ts, v, 50.0)
        if v is not None:
            if last is not None and 0 < ts - last[0] <= 50.0:
                signed += (last[1] + v) / 2 * (ts - last[0])
            last = (ts, v)
        ins.append(integral.inflow.value)
        outs.append(integral.outflow.value)
    assert ins == sorted(ins) and outs == sorted(outs) and min(ins + outs) >= 0
    assert math.isclose(integral.net, signed, rel_tol=1e-9, abs_tol=1e-6)


def test_reorder_remembers_only_a_few_boots() -> None:
    r = Reorder(0.0)
    for b in range(20):
        assert r.offer(f"boot{b}", 0, Point(T0 + b, 1.0, 1.0)) is None
        r.release()
    assert len(r.seen) == r.max_boots


finite = st.floats(-1e308, 1e308, allow_nan=False)
maybe = st.one_of(st.none(), finite, st.floats(-100, 100))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.floats(-5, 30), st.integers(0, 40), maybe, maybe,
                          st.one_of(st.none(), st.lists(st.floats(0, 5), max_size=4)),
                          st.one_of(st.none(), st.floats(0, 100))), max_size=40))
def test_any_input_never_breaks_the_engine(events) -> None:
    eng = Engine(AggregatorConfig(reorder_window=1.0, groups=[{"id": "g", "members": ["a", "b"]}]))
    last_in = {}
    for bms, dt, seq, power, current, cells, soc in events:
        s = sample(bms, T0 + dt, seq, power=power, current=current, cell_voltages=cells, soc=soc,
                   temperatures=[20.0])
        eng.on_sample(s, now=T0 + 40)
        eng.tick(now=T0 + 41 + dt)
        for id in eng.ids():
            st_ = eng.state(id, now=T0 + 42)  # a valid BatteryState: finite, no NaN
            assert st_.energy_in_kwh >= last_in.get(id, 0.0)
            last_in[id] = st_.energy_in_kwh
            eng.control(id, now=T0 + 42)
    again = Engine(AggregatorConfig(reorder_window=1.0, groups=[{"id": "g", "members": ["a", "b"]}]))
    again.load(json.loads(json.dumps(eng.dump(), allow_nan=False)))
    assert {i: again.state(i, T0).model_dump() for i in again.ids()} == \
        {i: eng.state(i, T0).model_dump() for i in eng.ids()}


def test_throughput_cycles_never_fall_when_the_bms_relearns_its_capacity() -> None:
    """Each interval counts against the capacity of its time: 1 Ah at 100 Ah and 1 Ah at 50 Ah are
    0.005 + 0.01 cycles; the total is not re-divided by today's capacity (which would make it fall)."""
    m = Meters(60.0)
    seen = []
    for i in range(7201):
        capacity = 100.0 if i <= 3600 else 50.0
        m.add(Point(float(i), None, -1.0, None, capacity))
        seen.append(m.readings()["cycles_throughput"])
    assert all(b >= a for a, b in zip(seen, seen[1:], strict=False))
    assert close(seen[-1], 1.0 / 2 / 100.0 + 1.0 / 2 / 50.0)
