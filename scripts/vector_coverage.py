"""Which captured vectors (shared/vectors/*.json) does the test suite actually check? A pytest run with a
plugin that wraps every entry of the vector files, as the tests load them with json.loads, and records
each read of an entry's expected values (`expected`, for advertisements `expected_bms`) made while a test
*runs* (reads while collecting, e.g. in parametrize ids, do not count).

    .venv/bin/python scripts/vector_coverage.py                 # the codec, adapter and scan-guess tests
    .venv/bin/python scripts/vector_coverage.py --list          # also every uncovered entry
    .venv/bin/python scripts/vector_coverage.py -- tests/collector/protocols/test_ant.py   # other test paths

Prints, per file and per protocol / bms type: entries with expected values, covered, and which tests
read them. "Covered" means a test read the expected values of that entry; whether it asserts every key
is the test's business (key-level counts are printed too). Exit status 0 (a report, not a gate).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT.parent / "shared" / "vectors"
if not VECTORS.exists():
    VECTORS = Path("/work/shared/vectors")
DEFAULT_TESTS = ["tests/collector/protocols", "tests/collector/test_aiobmsble_adapter.py",
                 "tests/collector/test_scan_guess.py"]
EXPECTED_KEYS = ("expected", "expected_bms")
GROUP_KEYS = ("protocol", "bms_type", "bms", "expected_bms")

_current_test: list[str | None] = [None]
hits: dict[tuple[str, int], set[str]] = defaultdict(set)  # (file, index) -> tests that read its expectation
key_hits: dict[tuple[str, int], set[str]] = defaultdict(set)  # (file, index) -> expected keys read


def _note(where: tuple[str, int], key: str | None = None) -> None:
    test = _current_test[0]
    if test is None:
        return
    hits[where].add(test)
    if key is not None:
        key_hits[where].add(key)


class Expected(dict):  # type: ignore[type-arg]
    """An entry's expected values: records which keys a running test reads."""

    def __init__(self, data: dict[str, Any], where: tuple[str, int]) -> None:
        super().__init__(data)
        self._where = where

    def __getitem__(self, key: str) -> Any:
        _note(self._where, key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        _note(self._where, key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        _note(self._where, str(key))
        return super().__contains__(key)

    def _all(self) -> None:
        for k in super().keys():
            _note(self._where, k)

    def __iter__(self) -> Iterator[str]:
        self._all()
        return super().__iter__()

    def keys(self):  # type: ignore[no-untyped-def]
        self._all()
        return super().keys()

    def items(self):  # type: ignore[no-untyped-def]
        self._all()
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        self._all()
        return super().values()

    def __eq__(self, other: object) -> bool:
        self._all()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


class Entry(dict):  # type: ignore[type-arg]
    """A vector entry: reading its expected value (any way) counts it as checked."""

    def __init__(self, data: dict[str, Any], where: tuple[str, int]) -> None:
        super().__init__(data)
        self._where = where
        for k in EXPECTED_KEYS:
            if isinstance(data.get(k), dict):
                dict.__setitem__(self, k, Expected(data[k], where))

    def __getitem__(self, key: str) -> Any:
        if key in EXPECTED_KEYS:
            _note(self._where, None if isinstance(dict.get(self, key), dict) else key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in EXPECTED_KEYS:
            _note(self._where, None if isinstance(dict.get(self, key), dict) else key)
        return super().get(key, default)


def has_expectation(entry: dict[str, Any]) -> bool:
    return any(entry.get(k) not in (None, {}, "") for k in EXPECTED_KEYS)


def group_of(entry: dict[str, Any]) -> str:
    for k in GROUP_KEYS:
        if isinstance(entry.get(k), str):
            return entry[k]
    return "?"


class Plugin:
    def __init__(self) -> None:
        self.texts = {p.read_text(): p.name for p in sorted(VECTORS.glob("*.json"))}
        self.loaded: dict[str, list[dict[str, Any]]] = {}
        original = json.loads

        def loads(s: Any, *args: Any, **kwargs: Any) -> Any:
            data = original(s, *args, **kwargs)
            name = self.texts.get(s) if isinstance(s, str) else None
            if name is None or not isinstance(data, list):
                return data
            wrapped = [Entry(e, (name, i)) if isinstance(e, dict) else e for i, e in enumerate(data)]
            self.loaded[name] = data
            return wrapped

        json.loads = loads  # the tests load the vectors at import time: patch before collection

    def pytest_runtest_call(self, item: Any) -> Iterator[None]:  # pragma: no cover - pytest hook
        _current_test[0] = item.nodeid.split("[")[0]
        try:
            yield
        finally:
            _current_test[0] = None

    pytest_runtest_call.hookwrapper = True  # type: ignore[attr-defined]


def report(list_uncovered: bool) -> None:
    total = covered = 0
    for path in sorted(VECTORS.glob("*.json")):
        entries = json.loads(path.read_text())
        groups: dict[str, list[int]] = defaultdict(list)
        for i, e in enumerate(entries):
            if isinstance(e, dict) and has_expectation(e):
                groups[group_of(e)].append(i)
        n = sum(len(v) for v in groups.values())
        c = sum(1 for idx in groups.values() for i in idx if (path.name, i) in hits)
        total, covered = total + n, covered + c
        print(f"\n{path.name}: {c}/{n} entries with expected values covered")
        for group, idx in sorted(groups.items()):
            got = [i for i in idx if (path.name, i) in hits]
            tests = sorted({t.split("::")[0].rsplit("/", 1)[-1] for i in got for t in hits[(path.name, i)]})
            keys = sum(len(key_hits[(path.name, i)]) for i in got)
            mark = "  " if len(got) == len(idx) else "!!"
            print(f" {mark} {group:28s} {len(got):3d}/{len(idx):<3d} keys read {keys:4d}  {', '.join(tests)}")
            if list_uncovered:
                for i in idx:
                    if (path.name, i) not in hits:
                        e = entries[i]
                        label = e.get("description") or e.get("test") or e.get("source_path") or e.get("hex", "")[:40]
                        print(f"        uncovered #{i}: {e.get('direction', '')} {str(label)[:100]}")
    print(f"\nTOTAL: {covered}/{total} entries with expected values covered")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list every uncovered entry")
    parser.add_argument("pytest_args", nargs="*", help="test paths / pytest options (after --)")
    args = parser.parse_args(argv)
    import pytest

    plugin = Plugin()
    sys.path.insert(0, str(ROOT / "tests"))
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--timeout", "600", *(args.pytest_args or DEFAULT_TESTS)],
                       plugins=[plugin])
    print(f"(pytest exit status {int(code)})")
    report(args.list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
