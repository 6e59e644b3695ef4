"""Shared fixtures: phantoms, real CT samples (skipped with a reason when they cannot be fetched)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def phantom():
    from ssl3d.data.phantoms import make_phantom

    return make_phantom(0, shape=(32, 48, 48))


@pytest.fixture(scope="session")
def oblique_phantom():
    from ssl3d.data.phantoms import make_phantom

    return make_phantom(1, shape=(32, 48, 48), oblique=True)


def _sample(name: str):
    from ssl3d.data.samples import SampleUnavailable, load_sample

    try:
        return load_sample(name)
    except SampleUnavailable as exc:
        pytest.skip(f"real CT sample {name} unavailable: {exc}")


@pytest.fixture(scope="session")
def lung1():
    return _sample("lung1")


@pytest.fixture(scope="session")
def lung2():
    return _sample("lung2")
