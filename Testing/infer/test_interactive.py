"""Click-to-segment: click simulation, input widening, a short interactive training through the loop, and
the InteractiveSession with an interactive bundle and with a segmentation bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssl3d.bundle import read_bundle, write_bundle
from ssl3d.config import apply_overrides, get_preset
from ssl3d.data.phantoms import make_phantom
from ssl3d.errors import BundleError, ConfigError, InputError
from ssl3d.infer.interactive import InteractiveSession, segment_with_points
from ssl3d.io import Volume
from ssl3d.train.interactive import correction_click, encode_clicks, interior_click, widen_input


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on 2 shared cores, 2 OpenMP threads spin against other processes (5-10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ras(volume: Volume, kji) -> np.ndarray:
    k, j, i = kji
    return (volume.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]


def _interior_voxels(mask: np.ndarray, count: int, seed: int) -> list[tuple[int, int, int]]:
    """``count`` voxels of the inner half of ``mask`` (by distance to its border)."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(mask)
    inner = np.argwhere(dist >= max(1.0, dist.max() / 2))
    picks = np.random.default_rng(seed).choice(len(inner), size=count, replace=False)
    return [tuple(int(v) for v in inner[p]) for p in picks]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


# ---------------------------------------------------------------------------------------------- clicks


def test_encode_clicks_gaussian_and_disk():
    maps = encode_clicks([(2, 2, 2, True), (0, 4, 4, False)], (5, 6, 7), 1.0)  # (2, D, H, W)
    assert maps.shape == (2, 5, 6, 7)
    assert maps[0, 2, 2, 2] == 1.0 and maps[1, 0, 4, 4] == 1.0
    assert torch.isclose(maps[0, 2, 2, 3], torch.tensor(np.exp(-0.5), dtype=torch.float32))
    assert maps[1, 2, 2, 2] < 0.01 and maps[0, 0, 4, 4] < 0.01  # each sign in its own channel
    disk = encode_clicks([(2, 2, 2, True)], (5, 5, 5), (1.0, 2.0, 2.0), encoding="disk")
    assert disk[0].sum() == 13 + 2  # radii (1, 2, 2): a radius-2 disc in the centre slice, one voxel above and below
    assert set(disk.unique().tolist()) == {0.0, 1.0}


def test_interior_and_correction_clicks():
    target = np.zeros((12, 12, 12), dtype=bool)
    target[2:10, 2:10, 2:10] = True
    assert interior_click(target) in {(z, y, x) for z in (5, 6) for y in (5, 6) for x in (5, 6)}
    g = torch.Generator().manual_seed(0)
    draws = [interior_click(target, g) for _ in range(50)]
    assert all(target[d] for d in draws)
    assert np.mean([min(min(d) - 2, 9 - max(d)) for d in draws]) > 1.0  # biased away from the border
    assert interior_click(np.zeros((3, 3, 3), dtype=bool)) is None
    missing = target.copy()
    missing[2:10, 2:10, 6:10] = False  # the prediction misses a big part: positive click there
    z, y, x, positive = correction_click(missing, target)
    assert positive and target[z, y, x] and not missing[z, y, x]
    extra = target.copy()
    extra[0:2, 0:12, 0:12] = True  # a false-positive slab larger than anything missed
    z, y, x, positive = correction_click(extra, target)
    assert not positive and extra[z, y, x] and not target[z, y, x]
    assert correction_click(target, target) is None


# ---------------------------------------------------------------------------------------------- widening


def _check_widened(net: torch.nn.Module, shape, expected: set[str]):
    torch.manual_seed(0)
    net.eval()
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        before = net(x)
    assert set(widen_input(net, 3)) == expected
    with torch.no_grad():
        after = net(torch.cat([x, torch.zeros(1, 2, *shape)], dim=1))
    first = lambda out: out[0] if isinstance(out, list) else out  # noqa: E731
    assert torch.allclose(first(before), first(after), atol=1e-5)
    return net


def test_widen_input_unet_keeps_outputs_and_learns_the_new_channels():
    from ssl3d.nets.unet import UNet

    net = _check_widened(UNet(1, 2, channels=(4, 8, 16)), (16, 16, 16), {"encoder.levels.0.0"})
    first = net.encoder.levels[0][0]
    assert first.in_channels == 3 and torch.all(first.weight[:, 1:] == 0)
    net.train()
    net(torch.randn(1, 3, 16, 16, 16)).square().mean().backward()
    assert first.weight.grad[:, 1:].abs().sum() > 0  # the zero-initialised weights get gradients
    assert widen_input(net, 3) == []
    with pytest.raises(ConfigError, match="must be >= the current 3"):
        widen_input(net, 2)
    with pytest.raises(ConfigError, match="unknown network"):
        widen_input(torch.nn.Conv3d(1, 2, 3), 3)


def test_widen_input_swinunetr_and_pctnet():
    from ssl3d.nets.builders import build_network

    swin = build_network("swinunetr", 1, 2, feature_size=12, depths=(1, 1, 1, 1))  # depth does not touch the input layers
    _check_widened(swin, (64, 64, 64), {"swinViT.patch_embed.proj", "encoder1.layer.conv1.conv", "encoder1.layer.conv3.conv"})
    pct = build_network("pctnet", 1, 2, input_size=[16, 32, 32], feature_chns=[4, 8, 16, 32, 64], window_sizes=[3, 3, 3])
    _check_widened(pct, (16, 32, 32), {"embeddings.0.proj", "embeddings.1.proj", "embeddings.2.proj"})


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short interactive training on phantoms (16³ patches) through the loop; its run folder."""
    from ssl3d.data.phantoms import write_phantom_dataset
    from ssl3d.train.interactive import InteractiveTask
    from ssl3d.train.loop import train

    root = tmp_path_factory.mktemp("interactive")
    data = write_phantom_dataset(root / "data", range(4), shape=(32, 48, 48))
    preset = apply_overrides(
        get_preset("interactive-cpu"),
        {"train.steps": 60, "train.val_every": 60, "train.checkpoint_every": 60, "train.log_every": 20, "train.patch": [16, 16, 16]},
    )
    outputs = train(InteractiveTask(data, root / "cache", val_fraction=0.25), preset, root / "run", torch.device("cpu"))
    return outputs


def test_training_writes_an_interactive_bundle(trained):
    bundle = read_bundle(trained["bundle"])
    assert bundle.task == "interactive"
    assert bundle.network["kwargs"]["in_channels"] == 3 and bundle.network["kwargs"]["out_channels"] == 2
    guidance = bundle.meta["provenance"]["guidance"]
    assert guidance["channels"] == ["image", "positive", "negative"]
    assert guidance["encoding"] == "gaussian" and guidance["sigma_voxels"] == [2.0, 2.0, 2.0]  # 5 mm at 2.5 mm
    assert "labels" not in bundle.meta
    validation = bundle.meta["metrics"]["validation"]
    assert validation["step"] == 60 and 0.0 < validation["score"] <= 1.0 and validation["clicks"] == 3
    events = [json.loads(line) for line in (trained["bundle"].parent / "events.jsonl").read_text().splitlines()]
    assert {"total", "dice", "ce"} <= set(next(e for e in events if e["event"] == "progress" and "loss" in e)["loss"])
    assert any(e["event"] == "metric" and e["name"] == "dice_1click" for e in events)


@pytest.fixture(scope="module")
def session(trained):
    return InteractiveSession(trained["bundle"], device="cpu")


def test_positive_clicks_inside_a_structure_do_not_lower_dice_on_average(session):
    first, last = [], []
    for seed in (50, 51):
        image, labels = make_phantom(seed, shape=(32, 48, 48))
        session.set_volume(image)
        for value in (1, 2, 5):  # liver, spleen, spine
            truth = labels.array == value
            scores = [_dice(session.add_point(_ras(image, p)).array > 0, truth) for p in _interior_voxels(truth, 3, value)]
            first.append(scores[0])
            last.append(scores[-1])
            session.reset()
    assert np.mean(first) > 0.2  # the 60-step model finds the structures at all
    assert np.mean(last) >= np.mean(first) - 0.01


def test_negative_click_undo_reset_and_changed_box(session):
    image, labels = make_phantom(52, shape=(32, 48, 48))
    session.set_volume(image)
    liver = _interior_voxels(labels.array == 1, 2, 0)
    masks = [session.mask.array.copy()]
    for point in liver:
        masks.append(session.add_point(_ras(image, point)).array)
        _check_changed_box(session.last_changed, masks[-2], masks[-1])
    assert masks[-1].dtype == np.uint8 and masks[-1].sum() > 0
    negative = tuple(int(v) for v in np.argwhere(masks[-1] > 0)[0])  # a voxel of the current mask
    masks.append(session.add_point(_ras(image, negative), positive=False).array)
    _check_changed_box(session.last_changed, masks[-2], masks[-1])
    assert masks[-1][negative] == 0 and masks[-1].sum() < masks[-2].sum()  # the region under it is removed
    for n in range(3, 0, -1):
        undone = session.undo().array
        assert np.array_equal(undone, masks[n - 1])  # exactly the previous mask
        _check_changed_box(session.last_changed, masks[n], undone)
    assert session.undo().array.sum() == 0 and session.last_changed is None  # nothing left to undo
    session.add_point(_ras(image, liver[0]))
    before = session.mask.array.copy()
    session.reset()
    assert session.mask.array.sum() == 0 and session.clicks == []
    _check_changed_box(session.last_changed, before, session.mask.array)


def _check_changed_box(box, before: np.ndarray, after: np.ndarray) -> None:
    changed = np.argwhere(before != after)
    if len(changed) == 0:
        assert box is None
        return
    k0, k1, j0, j1, i0, i1 = box
    assert np.all(changed.min(axis=0) == (k0, j0, i0)) and np.all(changed.max(axis=0) + 1 == (k1, j1, i1))  # tight


def test_points_outside_the_volume_and_before_a_volume_are_input_errors(trained):
    fresh = InteractiveSession(trained["bundle"], device="cpu", warmup=False)
    with pytest.raises(InputError, match="set_volume"):
        fresh.add_point((0.0, 0.0, 0.0))
    image, _ = make_phantom(53, shape=(32, 48, 48))
    fresh.set_volume(image)
    with pytest.raises(InputError, match="outside the volume"):
        fresh.add_point(_ras(image, (0, 0, 48.6)))  # half a voxel beyond the last column
    with pytest.raises(InputError, match="outside the volume"):
        fresh.add_point(_ras(image, (-1, 10, 10)))
    with pytest.raises(InputError, match="3 finite"):
        fresh.add_point((1.0, float("nan"), 2.0))
    fresh.add_point(_ras(image, (0, 0, 47.4)))  # the last column's half voxel is inside


def test_mask_has_the_input_geometry_and_matches_the_exact_paste(session, oblique_phantom, phantom):
    for image, labels in (oblique_phantom, phantom):
        session.set_volume(image)
        for point in _interior_voxels(labels.array == 1, 2, 1):
            mask = session.add_point(_ras(image, point))
        assert mask.same_grid(image) and mask.array.dtype == np.uint8 and np.array_equal(mask.ijk_to_ras, image.ijk_to_ras)
        exact = session._mapping.to_input_grid(session._model_mask.astype(np.uint8), label=True)
        assert np.array_equal(mask.array, exact.array)  # the ROI paste equals the whole-grid paste


def test_roi_stays_local_and_grows_when_the_structure_touches_its_border(session):
    image, labels = make_phantom(54, shape=(48, 128, 128))  # model grid about 48 x 82 x 82 at 2.5 mm
    session.set_volume(image)
    seen = []
    model = session.model
    session.model = lambda x: (seen.append(tuple(x.shape[2:])), model(x))[1]
    try:
        session.add_point(_ras(image, _interior_voxels(labels.array == 5, 1, 0)[0]))
        assert seen and all(np.prod(s) <= np.prod(session._model_mask.shape) / 4 for s in seen)
        everything = lambda x: torch.stack([torch.zeros_like(x[:, 0]), torch.ones_like(x[:, 0])], dim=1)  # noqa: E731
        session.model = lambda x: (seen.append(tuple(x.shape[2:])), everything(x))[1]
        session.reset()
        session.add_point(_ras(image, (24, 64, 64)))
    finally:
        session.model = model
    roi = session._roi
    limits = [min(n, session.max_roi * w) for n, w in zip(session._model_mask.shape, session.window)]
    assert [hi - lo for lo, hi in roi] == limits  # grew on every touched side up to the cap or the volume
    assert session.mask.array.sum() > 0


# ---------------------------------------------------------------------------------------------- segmentation bundles


def _blobs() -> tuple[Volume, Volume]:
    """An axis-aligned image with two separate blobs of label 1, one of label 2, and a large label 3."""
    labels = np.zeros((24, 40, 40), dtype=np.uint8)
    labels[4:10, 4:12, 4:12] = 1
    labels[14:20, 4:12, 4:12] = 1
    labels[4:20, 20:28, 4:12] = 2
    labels[2:22, 4:36, 20:38] = 3  # larger than the 16³ window: the ROI has to grow
    image = (labels * 100 - 50).astype(np.int16)
    matrix = np.diag([-1.5, -1.5, 2.0, 1.0])
    return Volume(image, matrix), Volume(labels, matrix.copy())


@pytest.fixture()
def seg_bundle(tmp_path, monkeypatch):
    """A random-weight segmentation bundle whose 'prediction' is a known label map (monkeypatched)."""
    from ssl3d.data.preprocess import PreprocessConfig, preprocess
    from ssl3d.nets.builders import build_network

    config = PreprocessConfig(orientation="RAS", spacing=None, intensity="window:-175,250")
    meta = {
        "network": {"name": "unet-small", "kwargs": {"channels": [4, 8, 16], "in_channels": 1, "out_channels": 4}},
        "task": "segmentation",
        "preprocessing": config.to_dict(),
        "labels": [{"value": v, "name": n, "color": [v * 40, 0, 0]} for v, n in ((1, "blob"), (2, "bar"), (3, "slab"))],
        "preset": {"train": {"patch": [16, 16, 16]}},  # the session's window
    }
    bundle = write_bundle(tmp_path / "seg", build_network("unet-small", 1, 4, channels=[4, 8, 16]).state_dict(), meta)
    image, labels = _blobs()
    _, model_labels, _ = preprocess(image, config, labels)
    truth = model_labels[0, 0].numpy()
    monkeypatch.setattr(InteractiveSession, "_predict", lambda self, roi: truth[tuple(slice(a, b) for a, b in roi)])
    return bundle, image, labels


def test_segmentation_bundle_adds_the_structure_under_the_click(seg_bundle):
    bundle, image, labels = seg_bundle
    session = InteractiveSession(bundle, device="cpu")
    session.set_volume(image)
    lab = labels.array
    upper_blob = np.zeros_like(lab, dtype=bool)
    upper_blob[4:10, 4:12, 4:12] = True
    mask = session.add_point(_ras(image, (6, 6, 6)))
    assert np.array_equal(mask.array > 0, upper_blob)  # its class, and only its connected component
    assert session.last_label == 1 and session.label_name == "blob"
    mask = session.add_point(_ras(image, (10, 24, 8)))
    assert np.array_equal(mask.array > 0, upper_blob | (lab == 2))
    mask = session.add_point(_ras(image, (12, 20, 30)))  # the slab is larger than the window
    assert np.array_equal(mask.array > 0, upper_blob | (lab == 2) | (lab == 3))
    assert session.last_changed == (2, 22, 4, 36, 20, 38)
    mask = session.add_point(_ras(image, (0, 0, 0)))  # background: nothing added
    assert session.last_changed is None
    mask = session.add_point(_ras(image, (10, 24, 8)), positive=False)  # removes the component it lies in
    assert np.array_equal(mask.array > 0, upper_blob | (lab == 3))
    assert session.last_changed == (4, 20, 20, 28, 4, 12)
    assert np.array_equal(session.undo().array > 0, upper_blob | (lab == 2) | (lab == 3))
    assert mask.same_grid(image)


def test_segment_with_points(seg_bundle):
    bundle, image, labels = seg_bundle
    mask = segment_with_points(bundle, image, [(8, 6, 6), (8, 6, 16)], negatives=[(8, 6, 6)], device="cpu", ijk=True)
    expected = np.zeros(labels.shape, dtype=bool)
    expected[14:20, 4:12, 4:12] = True  # (i, j, k) = (8, 6, 16): the lower blob; the upper one was removed
    assert np.array_equal(mask.array > 0, expected) and mask.same_grid(image)
    with pytest.raises(InputError, match="at least one positive"):
        segment_with_points(bundle, image, [], device="cpu")


def test_a_trained_segmentation_bundle_runs_on_a_real_model(seg_cpu_bundle, oblique_phantom):
    image, labels = oblique_phantom
    session = InteractiveSession(seg_cpu_bundle, device="cpu")
    session.set_volume(image)
    mask = session.add_point(_ras(image, _interior_voxels(labels.array == 1, 1, 0)[0]))
    assert mask.same_grid(image) and set(np.unique(mask.array)) <= {0, 1}
    assert session.last_label is None or session.label_name == seg_cpu_bundle.labels[session.last_label][0]


def test_pretext_bundles_are_refused(tmp_path):
    from ssl3d.nets.builders import build_network

    meta = {"network": {"name": "unet-small", "kwargs": {"channels": [4, 8]}}, "task": "pretext",
            "preprocessing": {}, "pretext": {"method": "vf"}}
    bundle = write_bundle(tmp_path / "p", build_network("unet-small", 1, 2, channels=[4, 8]).state_dict(), meta)
    with pytest.raises(BundleError, match="clicks need"):
        InteractiveSession(bundle, device="cpu")


def _drain(worker, timeout: float = 120.0) -> list:
    """All results of the requests submitted so far (the Slicer module polls the same way from a timer)."""
    import time

    results, deadline = [], time.monotonic() + timeout
    while worker.pending() and time.monotonic() < deadline:
        results += worker.take()
        time.sleep(0.01)
    return results + worker.take()


def test_click_worker_writes_what_the_session_predicts(trained, session):
    """The Slicer module's worker thread with a real session: applying only its changed voxels to a segment
    that the user painted gives the session's masks (where the clicks changed nothing, the paint stays)."""
    from ssl3d.infer.click_worker import ClickWorker

    image, labels = make_phantom(53, shape=(32, 48, 48))
    liver, spine = _interior_voxels(labels.array == 1, 1, 0)[0], _interior_voxels(labels.array == 5, 1, 0)[0]
    worker = ClickWorker()  # builds its own InteractiveSession, in its thread
    segment = np.zeros(image.shape, np.uint8)
    segment[0, 0, :4] = 1  # painted by the user before the clicks, far from the structures
    expected = []
    session.set_volume(image)
    for n, (point, positive) in enumerate([(liver, True), (spine, False)]):
        worker.submit("point", bundle=str(trained["bundle"]), device="cpu", volume=image if n == 0 else None,
                      volumeKey="v1", ras=_ras(image, point), positive=positive, target="t")
        expected.append(session.add_point(_ras(image, point), positive=positive).array.copy())
    worker.submit("undo", target="t")
    expected.append(expected[0])
    results = _drain(worker)
    worker.stop()
    assert [r["kind"] for r in results] == ["point", "point", "undo"] and not any("error" in r for r in results)
    assert [r["clicks"] for r in results] == [1, 2, 1]
    for result, mask in zip(results, expected):
        if result["box"] is not None:
            k0, k1, j0, j1, i0, i1 = result["box"]
            region = segment[k0:k1, j0:j1, i0:i1]
            region[result["changed"]] = result["values"][result["changed"]]
        assert np.array_equal(segment[1:], mask[1:]) and segment[0, 0, :4].all()  # the paint survives
        np.testing.assert_array_equal(result["ijkToRas"], image.ijk_to_ras)
    assert expected[0].sum() > 0  # the first click did segment something


def test_click_worker_reports_errors_and_needs_the_volume_again(trained):
    from ssl3d.infer.click_worker import ClickWorker

    image, _ = make_phantom(54, shape=(32, 48, 48))
    worker = ClickWorker()
    worker.submit("point", bundle=str(trained["bundle"]), device="cpu", volume=image, volumeKey="v1",
                  ras=(1e4, 0.0, 0.0), positive=True, target="t", tag=1)
    worker.submit("point", bundle=str(trained["bundle"]), device="cpu", volume=None, volumeKey="v2",
                  ras=_ras(image, (16, 24, 24)), positive=True, target="t", tag=2)  # a new volume key without the volume
    results = _drain(worker)
    worker.stop()
    assert "outside" in results[0]["error"].lower()
    assert "volume changed" in results[1]["error"]
    assert [r["tag"] for r in results] == [1, 2]  # the module finds which queued click failed


def test_click_worker_passes_on_the_device_note_once(trained):
    """A session that did not get the GPU it was asked for says so with its first result only."""
    from types import SimpleNamespace

    from ssl3d.infer.click_worker import ClickWorker

    def factory(bundle, device):
        made = InteractiveSession(bundle, device="cpu", warmup=False)
        made.device_choice = SimpleNamespace(message="cuda:0 has 0.1 GB free but the model needs about 2.5 GB: using the CPU (slower).")
        return made

    image, labels = make_phantom(55, shape=(32, 48, 48))
    liver = _interior_voxels(labels.array == 1, 2, 0)
    worker = ClickWorker(factory)
    for n, point in enumerate(liver):
        worker.submit("point", bundle=str(trained["bundle"]), device="auto", volume=image if n == 0 else None,
                      volumeKey="v", ras=_ras(image, point), positive=True, target="t")
    results = _drain(worker)
    worker.stop()
    assert "using the CPU" in results[0]["note"] and results[1]["note"] == ""
