"""The bus contract: topics round-trip, models reject NaN and bad input, the catalog matches the models."""

from __future__ import annotations

import pytest

from bmsbus.shared.models import BadMessage, BatteryState, Command, Sample, parse
from bmsbus.shared.quantities import SAMPLE_KEYS, SAMPLE_QUANTITIES, STATE_QUANTITIES
from bmsbus.shared.topics import MODEL_OF_KIND, TopicRef, Topics, slug


def test_every_topic_kind_round_trips_through_parse() -> None:
    t = Topics("bmsbus/v1", "home")
    for kind in [*MODEL_OF_KIND, "status"]:
        topic = t.topic(kind, "pack_1")
        assert t.parse(topic) == TopicRef(kind, "pack_1")
        assert t.parse(t.all_of(kind).replace("+", "x")) == TopicRef(kind, "x")
    assert t.bms_cmd_result("a") == "bmsbus/v1/home/bms/a/cmd/result"
    assert t.parse("bmsbus/v1/other/bms/a/sample") is None
    assert t.parse("bmsbus/v1/home/bms/a/unknown") is None
    with pytest.raises(ValueError):
        t.bms_sample("has/slash")


def test_slug_is_topic_and_ha_safe() -> None:
    assert slug("Shed Battery #1") == "shed_battery_1"
    assert slug("C8:47:8C:00:11:AA") == "c8_47_8c_00_11_aa"
    assert slug("///") == "unnamed"


def test_sample_fields_are_exactly_the_catalog_sample_quantities() -> None:
    envelope = {"schema_version", "bms", "ts", "boot", "seq"}
    assert set(Sample.model_fields) - envelope == SAMPLE_KEYS
    state_keys = {q.key for q in STATE_QUANTITIES}
    assert state_keys <= set(BatteryState.model_fields)
    assert len({q.key for q in SAMPLE_QUANTITIES}) == len(SAMPLE_QUANTITIES)


@pytest.mark.parametrize("payload,reason", [
    (b"{not json", "malformed JSON"),
    (b'{"bms":"a","ts":1,"boot":"b","seq":1,"voltage":NaN}', "voltage"),
    (b'{"bms":"a","ts":1,"boot":"b","seq":-1}', "seq"),
    (b'{"bms":"a b","ts":1,"boot":"b","seq":1}', "bms"),
    (b'{"bms":"a","ts":1,"boot":"b","seq":1,"soc":101}', "soc"),
    (b'{"bms":"a","ts":1,"boot":"b","seq":1,"schema_version":9}', "schema_version"),
    (b'[]', "invalid"),
])
def test_bad_sample_payloads_raise_bad_message_naming_the_problem(payload: bytes, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        parse(Sample, payload)


def test_absent_values_are_absent_on_the_wire_and_unknown_fields_are_ignored() -> None:
    s = Sample(bms="a", ts=1.0, boot="b", seq=3, voltage=52.1, cell_voltages=[3.3, 3.31])
    wire = s.to_json()
    assert b"current" not in wire and b"null" not in wire
    again = parse(Sample, wire[:-1] + b',"future_field":1}')
    assert again == s


def test_command_requires_id_and_expiry() -> None:
    with pytest.raises(BadMessage):
        parse(Command, b'{"switch":"charge","value":true,"issued":1}')
    c = parse(Command, b'{"id":"x1","switch":"charge","value":false,"issued":1,"expires":2}')
    assert isinstance(c, Command) and c.action == "set_switch"
