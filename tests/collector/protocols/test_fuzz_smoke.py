"""A small run of bench/fuzz_codecs.py over every protocol with a decode function: nothing but CodecError may
escape ProtocolEntry.decode, and its results are JSON. (The real run: `python bench/fuzz_codecs.py`.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from bmsbus.collector.protocols import REGISTRY

BENCH = Path(__file__).resolve().parents[3] / "bench"
COUNT = 1500


def _load(name: str):  # noqa: ANN202
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


fuzz = _load("fuzz_codecs")
NAMES = sorted(n for n, e in REGISTRY.items() if e.decode is not None)


@pytest.fixture(scope="module")
def seeds() -> dict:
    return fuzz.capture_seeds(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_fuzz_smoke(name: str, seeds: dict) -> None:
    result = fuzz.fuzz_protocol(name, COUNT, seed=1, seeds=seeds[name])
    assert result.inputs == COUNT
    assert result.escaped == 0 and result.bad_output == 0, "\n".join(result.examples)


def test_jk_protocols_have_emulator_seeds(seeds: dict) -> None:
    for name in ("jk", "jk_24s", "jk_32s", "jk04", "jk_uart", "jk_pb"):
        assert seeds[name].chunks and seeds[name].error is None, (name, seeds[name].error)
