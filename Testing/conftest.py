"""Shared fixtures: phantoms, real CT samples (skipped with a reason when they cannot be fetched)."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@pytest.fixture
def one_thread():
    """One intra-op thread for tests that train or time small ops: no oversubscription of 2 shared cores,
    and numbers that do not depend on the thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sample(name: str):
    from ssl3d.data.samples import SampleUnavailable, load_sample

    try:
        return load_sample(name)
    except SampleUnavailable as exc:
        pytest.skip(f"real CT sample {name} unavailable: {exc}")


#: Fixtures that load the real CT samples; every test using one (directly or through another fixture) is marked.
REAL_DATA_FIXTURES = frozenset({"lung1", "lung2"})


def pytest_collection_modifyitems(config, items):
    """Mark tests that need the real CT samples ``real_data`` (``-m "not real_data"`` then runs offline).

    A parameter naming a sample fixture counts too: such tests load it with ``request.getfixturevalue``.
    """
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        used = set(getattr(item, "fixturenames", ())) | {v for v in params.values() if isinstance(v, str)}
        if REAL_DATA_FIXTURES & used:
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session")
def lung1():
    return _sample("lung1")


@pytest.fixture(scope="session")
def lung2():
    return _sample("lung2")


# ---------------------------------------------------------------------------------------------- VoCo bundle
# A voco-v1-cpu bundle trained once per session on phantoms, shared by the pretext, inspection and fine-tune suites.

VOCO_CPU_STEPS = 40
VOCO_TRAIN_SEEDS = range(8)
VOCO_HELD_OUT_SEEDS = range(900, 904)


@dataclass(frozen=True)
class VoCoRun:
    """A finished ``voco-v1-cpu`` run.

    Attributes:
        bundle: the pretext bundle folder.
        run_dir: the run folder (checkpoints, events.jsonl, run.json).
        data: the training images (an imagesTr folder of phantoms, seeds 0-7, (32, 48, 48)).
        held_out: phantoms of other seeds (900-903), same layout.
        losses: the logged loss terms per step (``{"pos", "neg", "reg", "total"}``), step 1 first.
    """

    bundle: Path
    run_dir: Path
    data: Path
    held_out: Path
    losses: list[dict]


@pytest.fixture(scope="session")
def voco_cpu_run(tmp_path_factory) -> VoCoRun:
    import torch

    from ssl3d.config import apply_overrides, get_preset
    from ssl3d.data.phantoms import write_phantom_dataset
    from ssl3d.events import read_events
    from ssl3d.pretext.voco_task import VoCoTask
    from ssl3d.train.loop import train

    root = tmp_path_factory.mktemp("voco_cpu")
    data = write_phantom_dataset(root / "train", VOCO_TRAIN_SEEDS, shape=(32, 48, 48)) / "imagesTr"
    held = write_phantom_dataset(root / "held", VOCO_HELD_OUT_SEEDS, shape=(32, 48, 48)) / "imagesTr"
    overrides = {"train.steps": VOCO_CPU_STEPS, "train.checkpoint_every": VOCO_CPU_STEPS, "train.log_every": 1}
    preset = apply_overrides(get_preset("voco-v1-cpu"), overrides)
    run = root / "run"
    outputs = train(VoCoTask(data, root / "cache"), preset, run, torch.device("cpu"))
    losses = [e["loss"] for e in read_events(run / "events.jsonl") if e["event"] == "progress" and "loss" in e]
    return VoCoRun(outputs["bundle"], run, data, held, losses)


@pytest.fixture(scope="session")
def voco_cpu_bundle(voco_cpu_run) -> Path:
    """A trained ``voco-v1-cpu`` pretext bundle (cnn-small backbone, 4x4 grid, student + EMA teacher)."""
    return voco_cpu_run.bundle


# ---------------------------------------------------------------------------------------------- VF bundle
# A vf-v2-cpu bundle (small UNet, 5-class head) trained once per session on six 48x64x64 phantoms.
VF_PHANTOM = (48, 64, 64)


@pytest.fixture(scope="session")
def vf_phantoms(tmp_path_factory) -> Path:
    """Six CT-like phantoms for pretraining (an imagesTr/labelsTr folder; pretraining reads the images only)."""
    from ssl3d.data.phantoms import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("vf_data"), range(6), shape=VF_PHANTOM)


@pytest.fixture(scope="session")
def vf_cache(tmp_path_factory) -> Path:
    """One volume cache for every VF run of the session (keyed by dataset and preprocessing)."""
    return tmp_path_factory.mktemp("vf_cache")


@pytest.fixture(scope="session")
def vf_cpu_bundle(tmp_path_factory, vf_phantoms, vf_cache) -> Path:
    """A VF pretext bundle trained once per session: vf-v2-cpu (small UNet) on six 48x64x64 phantoms, 680 steps."""
    import torch

    from ssl3d.config import get_preset
    from ssl3d.pretext.vf_task import FusionTask
    from ssl3d.train.loop import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic numbers, and no oversubscription of the 2 shared cores
    try:
        run = tmp_path_factory.mktemp("vf_run")
        preset = get_preset("vf-v2-cpu")
        return train(FusionTask(vf_phantoms, vf_cache), preset, run, torch.device("cpu"))["bundle"]
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def vf_small_bundle(tmp_path_factory) -> Path:
    """An untrained vf-v1-cpu bundle (small UNet, channels 4-8-16): enough for geometry and the fusion relation."""
    import torch

    from ssl3d.bundle import write_bundle
    from ssl3d.config import apply_overrides, get_preset
    from ssl3d.nets.builders import build_network
    from ssl3d.pretext.vf_bundle import fusion_bundle_meta
    from ssl3d.pretext.vf_task import network_spec

    preset = apply_overrides(get_preset("vf-v1-cpu"), {"network.kwargs": {"channels": [4, 8, 16]}})
    name, kwargs = network_spec(preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(name, **kwargs)
    meta = fusion_bundle_meta(preset, name, kwargs, {"data": None, "steps": 0}, {})
    return write_bundle(tmp_path_factory.mktemp("vf_small") / "bundle", net.state_dict(), meta).path
