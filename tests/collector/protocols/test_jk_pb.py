"""JK-PB RS485 network: assembler, vectors, sniffing and taking over as master (fake clock), bus driver."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors_util import proto

from bmsbus.collector.codec import ChecksumError, CodecError, FramingError, drain
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.emulation.base import make_pack
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.jk import ble, pb
from bmsbus.collector.protocols.jk.driver import JkPbBus, JkPbDriver
from bmsbus.collector.protocols.jk.emulator import JkPbBusEmulator, make_bus

PROTO = proto("jk_pb_rs485")


def _chunks(e: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(h) for h in e["frames_hex"]]


def test_trigger_requests_match_captures() -> None:
    reqs = _chunks(PROTO[0])
    assert [pb.build_trigger(1, r) for r in (pb.REG_DEVICE_INFO, pb.REG_SETTINGS, pb.REG_CELL_INFO)] == reqs
    assert pb.build_trigger(3, pb.REG_CELL_INFO) == _chunks(PROTO[3])[0]
    assert pb.build_trigger(1, pb.REG_CELL_INFO).hex() == "0110162000010200 00d6f1".replace(" ", "")
    got = pb.decode(reqs)
    assert [(g["frame_type"], g["address"], g["register"]) for g in got] == [
        ("request", 1, 0x161C), ("request", 1, 0x161E), ("request", 1, 0x1620)]
    exp = PROTO[0]["expected"]
    assert all(r[0] == exp["address"] and r[1] == exp["function"] for r in reqs)
    # "0x161C->frame type 03" ...: the register each trigger names, and the frame type it asks for
    wanted = [(int(text.split("->")[0], 16), int(text.rsplit(" ", 1)[1])) for text in exp["registers"]]
    assert [(g["register"], t) for g, (_r, t) in zip(got, wanted, strict=True)] == wanted
    assert {pb.REG_DEVICE_INFO: 3, pb.REG_SETTINGS: 1, pb.REG_CELL_INFO: 2} == dict(wanted)
    (polled,) = pb.decode(_chunks(PROTO[3]))
    assert (polled["address"], polled["register"]) == (PROTO[3]["expected"]["address"], PROTO[3]["expected"]["register"])


@pytest.mark.parametrize("index", [1, 2, 4, 5, 6], ids=lambda i: PROTO[i]["description"][:50])
def test_slave_responses(index: int) -> None:
    entry = PROTO[index]
    exp = entry["expected"]
    got = pb.decode(_chunks(entry))
    assert not [g for g in got if "error" in g]
    frame, ack = got[0], got[1]
    assert frame["frame_type"] == exp["frame_type"] and ack["frame_type"] == "ack"
    raw = b"".join(_chunks(entry))
    assert pb.build_ack(ack["address"], ack["register"]) == raw[-8:]
    if "slave_address_in_ack" in exp:
        assert frame["address"] == ack["address"] == exp["slave_address_in_ack"]
    if "ack_address" in exp:
        assert frame["address"] == exp["ack_address"]
    if "ack_register" in exp:
        assert ack["register"] == exp["ack_register"]
    if "byte5" in exp:
        assert frame["counter"] == exp["byte5"]
    for key, ours in (("vendor_id", "model"), ("hardware_version", "hw_version"), ("software_version", "sw_version"),
                      ("device_name", "name")):
        if key in exp:
            assert frame[ours] == exp[key]
    if "cell_count" in exp:
        assert frame["settings"]["cell_count"] == exp["cell_count"]
    if "device_address_byte270" in exp:
        assert frame["settings"]["device_address"] == exp["device_address_byte270"]
    if frame["frame_type"] == 2:
        assert 0 < len(frame["cell_voltages"]) <= 32 and frame["voltage"] == pytest.approx(
            sum(frame["cell_voltages"]), abs=0.05)


def test_setting_writes_are_parsed() -> None:
    writes = pb.decode(_chunks(PROTO[7]))
    exp = PROTO[7]["expected"]
    assert all(w["frame_type"] == "write" and w["address"] == exp["address"] for w in writes)
    assert all(len(w["data"]) == 2 * exp["byte_count"] == 4 * exp["register_count"] for w in writes)
    assert all(raw[1] == exp["function"] and int.from_bytes(raw[4:6], "big") == exp["register_count"]
               and raw[6] == exp["byte_count"] for raw in _chunks(PROTO[7]))
    assert [w["register"] for w in writes][:4] == [0x1078, 0x1078, 0x1000, 0x1084]
    assert int(writes[2]["data"], 16) == 3500 and int(writes[3]["data"], 16) == 3440
    control = pb.decode(_chunks(PROTO[8]))
    assert [int(w["data"], 16) for w in control] == PROTO[8]["expected"]["values"]


def test_ch341_padding_and_echo_are_tolerated() -> None:
    """[mm]: CH341 adapters give 300 + 00 + ACK + 00 and echo our request first."""
    status, ack = _chunks(PROTO[4])
    request = _chunks(PROTO[3])[0]
    got = pb.decode([request, status + b"\x00" + ack + b"\x00"])
    assert [g["frame_type"] for g in got] == ["request", 2, "ack"] and got[1]["address"] == 3


def test_assembler_chunkings_and_errors() -> None:
    status, ack = _chunks(PROTO[4])
    stream = pb.build_trigger(3, pb.REG_CELL_INFO) + status + ack
    expected = ["request", 2, "ack"]
    for size in (1, 7, 20, 300, len(stream)):
        asm = pb.JkPbAssembler()
        kinds = [f.kind for i in range(0, len(stream), size) for f in drain(asm, stream[i : i + size])
                 if not isinstance(f, CodecError)]
        assert kinds == expected, size
        assert asm.pending == 0
    for n in range(len(status)):
        asm = pb.JkPbAssembler()
        asm.feed(status[:n])
        assert asm.next_frame() is None
    bad = status[:-1] + bytes(((status[-1] + 1) & 0xFF,))
    kinds = [type(x) if isinstance(x, CodecError) else x.kind for x in drain(pb.JkPbAssembler(), bad + ack)]
    assert kinds[0] is ChecksumError and kinds[-1] == "ack"  # the ACK after a bad frame is still found
    kinds = [type(x) if isinstance(x, CodecError) else x.kind for x in drain(pb.JkPbAssembler(), b"\xff\xfe" + ack)]
    assert kinds == [FramingError, "ack"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=6))
def test_garbage_never_escapes(chunks: list[bytes]) -> None:
    pb.decode(chunks)
    codec = pb.JkPbBusCodec((1, 2))
    for i, c in enumerate(chunks):
        codec.feed(c, i * 0.1)
        codec.poll(i * 0.1)
    while codec.next_event() is not None:
        pass


# --- fake-clock bus simulations ------------------------------------------------------------------------

def run(bus: JkPbBusEmulator, codec: pb.JkPbBusCodec, start: float, end: float, *, echo: bool = False,
        dt: float = 0.01, times: list[float] | None = None) -> list[bytes]:
    """Drive emulator and codec together on a fake clock; returns the requests the codec wrote."""
    sent = []
    t = start
    while t < end:
        for chunk in bus.tick(t):
            codec.feed(chunk, t)
        request = codec.poll(t)
        if request is not None:
            sent.append(request)
            if times is not None:
                times.append(t)
            if echo:
                codec.feed(request, t)
            replies = bus.receive(request)
            codec.feed(b"", t + 0.02)
            for chunk in replies:
                codec.feed(chunk, t + 0.04)
        codec.feed(b"", t)
        t = round(t + dt, 6)
    return sent


def _events(codec: pb.JkPbBusCodec) -> list[pb.PackFrame]:
    out = []
    while (ev := codec.next_event()) is not None:
        out.append(ev)
    return out


def _cells(raw: bytes) -> list[float]:
    return ble.decode_cell_info(raw, ble.Layout.JK02_32S, "15.38")["cell_voltages"]


def test_sniffing_a_master_with_three_slaves() -> None:
    bus = make_bus(slaves=3, master=True, cells=16, seed=10)
    for i, slave in enumerate(bus.slaves):  # make the packs distinguishable by cell count
        slave.state.cell_voltages = slave.state.cell_voltages[: 8 + 4 * i]
        slave.state.cell_resistances = slave.state.cell_resistances[: 8 + 4 * i]
    codec = pb.JkPbBusCodec((1, 2, 3), identify=False)
    sent = run(bus, codec, 0.0, 13.0)
    assert sent == [] and codec.mode == "sniff"
    events = _events(codec)
    cells = [e for e in events if e.kind == ble.TYPE_CELL_INFO]
    by_address = {a: [e for e in cells if e.address == a] for a in (0, 1, 2, 3)}
    assert all(len(v) == 3 for v in by_address.values())  # three master cycles of 4.4 s
    for slave in bus.slaves:
        for ev in by_address[slave.address]:
            assert ev.via == "ack"
            assert _cells(ev.raw) == pytest.approx(slave.state.cell_voltages)
    assert bus.master_state is not None
    assert all(ev.via == "broadcast" for ev in by_address[0])
    assert _cells(by_address[0][0].raw) == pytest.approx(bus.master_state.cell_voltages)
    settings_ = [e for e in events if e.kind == ble.TYPE_SETTINGS]
    assert {e.address for e in settings_} == {0, 1, 2, 3}
    assert all(e.raw[pb.DEVADDR_OFFSET] == e.address for e in settings_)
    assert codec.reading(2)["cell_voltages"] == pytest.approx(bus.slaves[1].state.cell_voltages)


def test_sniffing_identifies_packs_in_idle_gaps() -> None:
    bus = make_bus(slaves=3, master=True, seed=11)
    codec = pb.JkPbBusCodec((1, 2, 3), identify=True, identify_interval=1.0)
    sent = run(bus, codec, 0.0, 14.0)
    assert codec.mode == "sniff"
    assert sent and all(r[2:4] == b"\x16\x1c" for r in sent)  # only device-info requests, in idle gaps
    assert {a: codec.packs[a].name for a in (1, 2, 3)} == {1: "pack-1", 2: "pack-2", 3: "pack-3"}
    assert len(sent) == 3


def test_taking_over_as_master_with_four_slaves_and_yielding_back() -> None:
    bus = make_bus(slaves=4, master=False, seed=12)
    codec = pb.JkPbBusCodec((1, 2, 3, 4), cell_interval=2.5, settings_interval=10.0)
    early = run(bus, codec, 0.0, 1.9)
    assert codec.mode == "sniff"  # listening for a master first; identification requests only
    assert early and all(r[2:4] == b"\x16\x1c" for r in early)
    times: list[float] = []
    sent = early + run(bus, codec, 1.9, 12.0, echo=True, times=times)  # an adapter echoing our requests
    assert codec.mode == "master"
    polled = {(r[0], int.from_bytes(r[2:4], "big")) for r in sent}
    for a in (1, 2, 3, 4):
        assert {(a, pb.REG_DEVICE_INFO), (a, pb.REG_CELL_INFO), (a, pb.REG_SETTINGS)} <= polled
    assert sent[0][2:4] == b"\x16\x1c"  # device info first: packs are identified by name
    assert bus.requests_seen == [(r[0], int.from_bytes(r[2:4], "big")) for r in sent]
    assert {a: codec.packs[a].name for a in (1, 2, 3, 4)} == {a: f"pack-{a}" for a in (1, 2, 3, 4)}
    for slave in bus.slaves:
        assert codec.reading(slave.address)["cell_voltages"] == pytest.approx(slave.state.cell_voltages)
        assert codec.reading(slave.address)["switches"]["charge"] is True
    n_cell = sum(1 for r in sent if r[2:4] == b"\x16\x20")
    assert 4 * 3 <= n_cell <= 4 * 5  # every 2.5 s per pack over ~10 s
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= codec.request_gap
    # a real master appears: the codec goes quiet at once
    bus.master_state = make_pack(name="pack-0")
    sent = run(bus, codec, 12.0, 20.0)
    assert codec.mode == "sniff"
    assert all(r[2:4] == b"\x16\x1c" for r in sent)  # at most identification, no more polling


def test_no_answer_from_an_address_times_out_and_moves_on() -> None:
    bus = make_bus(slaves=2, master=False, seed=13)
    codec = pb.JkPbBusCodec((1, 2, 5), cell_interval=2.5)
    sent = run(bus, codec, 0.0, 8.0)
    assert codec.timeouts > 0
    assert {r[0] for r in sent} == {1, 2, 5}
    assert codec.packs[1].cell_raw is not None and codec.packs[5].cell_raw is None


# --- asyncio side over an emulated link ---------------------------------------------------------------

async def test_bus_yields_samples_for_every_pack() -> None:
    bus = make_bus(slaves=3, master=False, seed=14)
    async with EmulatedLink(bus, mtu=64, tick_period=0.01) as link:
        jk = JkPbBus(link, (1, 2, 3), master_timeout=0.2, idle_gap=0.05, cell_interval=0.3, request_gap=0.02)
        seen: dict[str | None, int] = {}
        async for sample in jk.samples():
            assert sample.device_name is not None
            seen[sample.device_name] = sample.address
            slave = bus.by_address(sample.address)
            assert slave is not None and sample.reading["cell_voltages"] == pytest.approx(slave.state.cell_voltages)
            if len(seen) == 3:
                break
    assert seen == {"pack-1": 1, "pack-2": 2, "pack-3": 3}


async def test_driver_reads_one_slave() -> None:
    entry = REGISTRY["jk_pb"]
    bus = make_bus(slaves=2, master=False, seed=15)
    async with EmulatedLink(bus, mtu=64, tick_period=0.01) as link:
        drv = entry.driver(link, DriverOptions(request_timeout=3.0, options={
            "address": 2, "master_timeout": 0.2, "idle_gap": 0.05, "cell_interval": 0.3}))
        assert isinstance(drv, JkPbDriver)
        info = await drv.open()
        assert info.name == "pack-2" and info.extra["bus_address"] == "2"
        r = await drv.read()
        assert r["cell_voltages"] == pytest.approx(bus.slaves[1].state.cell_voltages)
        assert set(r) <= drv.quantities
    single = entry.emulator(make_pack())  # type: ignore[misc]
    assert isinstance(single, JkPbBusEmulator) and [s.address for s in single.slaves] == [1]
