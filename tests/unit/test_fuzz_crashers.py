"""Every crasher a fuzz target found, kept under tests/fuzz/crashers/<target>/, replayed through the
target's own input function (the same oracle as under atheris): each must now give a counted drop or
a clear error, not an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz.harness import TARGETS, load

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parents[2]

CRASHERS = ROOT / "tests/fuzz/crashers"
CASES = sorted(p for t in TARGETS for p in (CRASHERS / t).glob("*") if p.is_file() and p.name != "README")


def test_the_crasher_folders_are_the_targets() -> None:
    assert {p.name for p in CRASHERS.iterdir() if p.is_dir()} <= set(TARGETS)


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_crasher_is_handled(case: Path) -> None:
    load(case.parent.name).one_input(case.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_seeds_are_handled(target: str) -> None:
    """The seeds themselves (real messages and packets) pass the oracle: the targets start from inputs the
    product accepts."""
    module = load(target)
    for s in module.seeds():
        module.one_input(s)
