"""Fixtures every layer of the suite shares (unit/, interop/, e2e/).

tests/ is on sys.path (pytest puts a rootdir conftest's folder there; this says so out loud), so the tests
import their shared helpers as ``support.<module>``: the SA builder (support.sa), packets (support.packets),
engine calls (support.engines), the in-memory IKE pair (support.ike_pair), namespaces and daemons.
"""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest
from support.engines import ENGINES
from support.shm_helpers import region_file

# a test's layer is its folder, and its marker too: `-m "not e2e"` selects the same tests as the paths do
LAYERS = ("unit", "interop", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name in LAYERS and item.path.parent.parent == Path(__file__).resolve().parent:
            item.add_marker(item.path.parent.name)


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


@pytest.fixture
def shm_path(tmp_path):
    """A region file name no other test uses, removed afterwards."""
    path = region_file(tmp_path)
    yield path
    path.unlink(missing_ok=True)
