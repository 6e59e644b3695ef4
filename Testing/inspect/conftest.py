"""Fixtures of the inspection tests: the session's trained ``voco-v1-cpu`` bundle (from the pretext suite),
the same network with random weights, an untrained ``voco-v2-cpu`` bundle and
inspections shared by several tests.

The VoCo fixtures and the small untrained VF bundle are defined in ``Testing/conftest.py`` (shared with the
render tier).
"""

from __future__ import annotations

from pathlib import Path

import pytest


#: Held-out phantom seeds (the VoCo bundle trains on seeds 0-7), shape (32, 48, 48) like its training data.
HELD_OUT = (900, 901)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every inspection test runs on one thread (Testing/conftest.py)."""


@pytest.fixture(scope="session")
def held_out_phantoms():
    from ssl3d.data.phantoms import make_phantom

    return [make_phantom(seed, shape=(32, 48, 48))[0] for seed in HELD_OUT]


@pytest.fixture(scope="session")
def voco_untrained_bundle(tmp_path_factory, voco_cpu_bundle) -> Path:
    """The trained bundle's network (same preset, metadata and layout) with seeded random weights."""
    import torch

    from ssl3d.bundle import read_bundle, write_bundle
    from ssl3d.config import from_dict
    from ssl3d.pretext.voco_bundle import VoCoNetwork

    trained = read_bundle(voco_cpu_bundle)
    preset = from_dict(trained.meta["preset"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = VoCoNetwork(preset.network, preset.voco)
    meta = {k: v for k, v in trained.meta.items() if k != "schema"}
    meta["provenance"] = {**meta["provenance"], "steps": 0, "data": None}
    return write_bundle(tmp_path_factory.mktemp("voco_untrained") / "bundle", net.state_dict(), meta).path


@pytest.fixture(scope="session")
def voco_v2_bundle(tmp_path_factory) -> Path:
    """An untrained voco-v2-cpu bundle (cnn-small, 3x3 grid in a 48x48x16 window, shared backbone): geometry,
    truth and the v2 score formula do not need training."""
    import torch

    from ssl3d.bundle import write_bundle
    from ssl3d.config import get_preset
    from ssl3d.pretext.voco_bundle import VoCoNetwork, voco_bundle_meta

    preset = get_preset("voco-v2-cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = VoCoNetwork(preset.network, preset.voco)
    meta = voco_bundle_meta(preset, net, {"data": None, "steps": 0})
    return write_bundle(tmp_path_factory.mktemp("voco_v2") / "bundle", net.state_dict(), meta).path


@pytest.fixture(scope="session")
def voco_inspections(voco_cpu_bundle, held_out_phantoms, oblique_phantom):
    """Trained-bundle inspections: {"held_out": [dense, one per held-out phantom], "oblique": not dense}."""
    from ssl3d.inspect import inspect_voco

    held = [inspect_voco(voco_cpu_bundle, image, dense=True, seed=0) for image in held_out_phantoms]
    return {"held_out": held, "oblique": inspect_voco(voco_cpu_bundle, oblique_phantom[0], seed=1, device="auto")}


@pytest.fixture(scope="session")
def voco_v2_inspections(voco_v2_bundle, held_out_phantoms, oblique_phantom):
    """Untrained voco-v2-cpu inspections, 16 random crops (one pass: 4 volumes x 4 crops, no companions):
    {"axial": held-out phantom 0, "oblique": the oblique phantom}."""
    from ssl3d.inspect import inspect_voco

    return {"axial": inspect_voco(voco_v2_bundle, held_out_phantoms[0], seed=2),
            "oblique": inspect_voco(voco_v2_bundle, oblique_phantom[0], seed=3)}
