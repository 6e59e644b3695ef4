"""Pretext inspection (issue 7): VoCo position maps and Volume Fusion maps on the input grid, summaries,
pictures, the ``ssl3d inspect`` command and its errors."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from ssl3d.cli import main
from ssl3d.data.preprocess import apply_intensity
from ssl3d.errors import BundleError, InputError
from ssl3d.events import read_events
from ssl3d.inspect import fusion_map, inspect_fusion, inspect_voco, voco_map, write_inspection
from ssl3d.inspect.commands import parse_ras
from ssl3d.inspect.fusion_map import fusion_stats
from ssl3d.inspect.voco_map import crop_stats, place_window
from ssl3d.io import Volume, read_volume, write_volume
from ssl3d.pretext.voco import position_labels

VOCO_VOLUMES = {"grid", "predicted", "truth"}
VF_VOLUMES = {"fused", "background", "foreground", "truth", "predicted", "error", "confidence"}


# ---------------------------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "volume, points, expected",
    [
        ((60, 60, 20), None, (6, 6, 2)),  # centred
        ((60, 60, 20), [[50, 30, 10]], (11, 6, 2)),  # x shifted the least: 50 < 11 + 40
        ((60, 60, 20), [[2, 30, 0]], (0, 6, 0)),  # cut at the border (the centre is clamped later)
        ((48, 48, 16), [[30, 30, 5]], (0, 0, 0)),  # the window is the volume
    ],
)
def test_place_window(volume, points, expected):
    # window (48, 48, 16), crop centres in [8, 40) of the window
    pts = None if points is None else np.array(points, dtype=float)
    assert place_window(volume, (48, 48, 16), (8, 40), pts) == expected


def test_ill_place_window_points_too_far_apart():
    with pytest.raises(InputError, match="inspect them separately"):
        place_window((200, 60, 20), (48, 48, 16), (8, 40), np.array([[10.0, 30, 5], [150.0, 30, 5]]))


def test_crop_stats():
    s = crop_stats(np.array([0.6, 0.2, 0.2, 0.0]), np.array([0.5, 0.5, 0.0, 0.0]))
    assert s["predicted_cell"] == 0 and s["true_cells"] == [0, 1] and s["top1"]
    assert s["l1"] == pytest.approx(0.1 + 0.3 + 0.2)
    assert s["mass_on_true"] == pytest.approx(0.8)
    assert s["entropy"] == pytest.approx(-(0.6 * np.log2(0.6) + 2 * 0.2 * np.log2(0.2)))
    assert crop_stats(np.zeros(4), np.array([0.0, 1, 0, 0]))["entropy"] == pytest.approx(2.0)  # no score: uniform


def test_fusion_stats():
    truth, pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    s = fusion_stats(truth, pred, 3)
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert [c["accuracy"] for c in s["per_class"]] == [0.5, 1.0, 0.0]
    assert s["balanced_accuracy"] == pytest.approx(0.5) and s["accuracy"] == pytest.approx(0.6)
    assert s["per_class"][1]["dice"] == pytest.approx(0.8)
    assert fusion_stats(truth, pred, 3, truth < 2)["voxels"] == 4


def test_parse_ras():
    assert parse_ras(" 12.5,-30,40 ") == (12.5, -30.0, 40.0)
    for bad in ("1,2", "a,b,c", "1,2,nan"):
        with pytest.raises(InputError, match="--box must be R,A,S"):
            parse_ras(bad)


def test_import_is_light():
    code = "import sys, ssl3d.inspect as m; assert callable(m.voco_map) and callable(m.fusion_map); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------- VoCo


def _all(inspections):
    return [*inspections["held_out"], inspections["oblique"]]


def test_voco_volumes_have_the_input_grid(voco_inspections, held_out_phantoms, oblique_phantom):
    images = [*held_out_phantoms, oblique_phantom[0]]
    for result, image in zip(_all(voco_inspections), images):
        assert set(result.volumes) >= VOCO_VOLUMES
        for name, volume in result.volumes.items():
            assert volume.same_grid(image, atol=1e-9), name
        grid = result.volumes["grid"].array
        assert grid.dtype == np.uint8 and set(np.unique(grid)) <= set(range(17)) and (grid > 0).mean() > 0.3
    assert "localisation" in voco_inspections["held_out"][0].volumes and "localisation" not in voco_inspections["oblique"].volumes


def test_voco_truth_equals_the_closed_form_labels_per_cell(voco_inspections):
    for result in _all(voco_inspections):
        s = result.summary
        labels = position_labels(np.array([s["crops"][0]["center_grid_xy"]]), 16, 16, 4)[0]
        grid, truth, predicted = (result.volumes[k].array for k in ("grid", "truth", "predicted"))
        assert np.all(truth[grid == 0] == 0) and np.all(predicted[grid == 0] == 0)
        for cell in np.unique(grid[grid > 0]):
            inside = grid == cell
            assert np.all(truth[inside] == np.float32(labels[cell - 1])), cell
            assert np.all(predicted[inside] == np.float32(s["crops"][0]["predicted"][cell - 1])), cell


def test_voco_summary_agrees_with_the_volumes(voco_inspections):
    for result in _all(voco_inspections):
        s = result.summary
        assert s["chance"] == 1 / 16 and s["cells"] == 16 and len(s["crops"]) == 16 and s["mode"] == "random"
        for crop in s["crops"]:
            p, y = np.array(crop["predicted"]), np.array(crop["true"])
            np.testing.assert_allclose(y, position_labels(np.array([crop["center_grid_xy"]]), 16, 16, 4)[0])
            assert crop["l1"] == pytest.approx(np.abs(p - y).sum()) and crop["top1"] == (y[np.argmax(p)] == y.max())
            assert len(crop["corners"]) == 8 and crop["clamped"] is False
        assert s["top1_accuracy"] == pytest.approx(np.mean([c["top1"] for c in s["crops"]]))
        boxes = json.loads(result.texts["boxes.json"])
        assert boxes["boxes"][0]["corners"] == s["crops"][0]["corners"] and len(boxes["boxes"]) == 16
        assert result.pictures["voco.png"].ndim == 3 and result.pictures["voco.png"].dtype == np.uint8
    dense = voco_inspections["held_out"][0]
    values = np.array(dense.summary["dense"]["localisation"])
    shown = dense.volumes["localisation"].array[dense.volumes["grid"].array > 0]
    assert np.abs(np.unique(shown)[:, None] - values.ravel()[None, :]).min(axis=1).max() < 1e-5  # every voxel shows a lattice crop
    assert dense.summary["dense"]["mean_localisation"] == pytest.approx(values.mean())


def _box_frame(corners):
    """Origin (3,) and edges (3, 3) of a box from its 8 RAS corners in any order, without the code's corner
    order: the three edges are the corner differences whose 0/1 sums give every corner; edge n points the
    most along R, A, S (n = 0, 1, 2) and positive there, so edge 0 is the grid's x and edge 1 its y."""
    c = np.asarray(corners, dtype=np.float64)
    for trio in itertools.combinations(c[1:] - c[0], 3):
        sums = np.array([np.dot(bits, trio) for bits in itertools.product((0, 1), repeat=3)])
        if all(np.linalg.norm(c - c[0] - v, axis=1).min() < 1e-3 for v in sums):
            break
    else:
        raise AssertionError(f"not the corners of a box: {c.tolist()}")
    origin, edges, left = c[0].copy(), [], list(trio)
    for axis in range(3):
        edge = left.pop(int(np.argmax([abs(e[axis]) / np.linalg.norm(e) for e in left])))
        if edge[axis] < 0:
            origin, edge = origin + edge, -edge
        edges.append(edge)
    return origin, np.array(edges)


def _fractions(image, corners):
    """Each input voxel's position in the box as fractions (k, j, i, 3) of its R-, A- and S-most edges."""
    origin, edges = _box_frame(corners)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in image.shape[::-1]), indexing="ij"), axis=-1).reshape(-1, 3)
    ras = ijk @ image.ijk_to_ras[:3, :3].T + image.ijk_to_ras[:3, 3]
    u = np.linalg.solve(edges.T, (ras - origin).T).T
    return u.reshape(*image.shape[::-1], 3).transpose(2, 1, 0, 3)


def _check_against_boxes_json(result, image, grid):
    """Grid cells and truth against boxes.json alone (not the code's cell map): a voxel's cell is where its
    RAS position lies in the grid box (x towards R, y towards A, cell ix*grid + iy); voxels of the crop box
    have truth > 0; the voxel nearest the crop's centre lies in a true cell."""
    boxes = json.loads(result.texts["boxes.json"])
    u = _fractions(image, boxes["grid"]["corners"])
    margin = 1.0 / np.array(result.summary["grid_box"]["size_xyz"])  # one model voxel: nearest-neighbour slack
    cells, truth = result.volumes["grid"].array.astype(int) - 1, result.volumes["truth"].array
    in_cell = grid * u[..., :2] % 1.0
    clear = np.all((u >= margin) & (u <= 1 - margin), axis=-1) & np.all((in_cell >= grid * margin[:2]) & (in_cell <= 1 - grid * margin[:2]), axis=-1)
    expected = np.floor(u[..., 0] * grid).astype(int) * grid + np.floor(u[..., 1] * grid).astype(int)
    assert clear.sum() > 200 and np.array_equal(cells[clear], expected[clear])
    assert np.all(cells[np.any((u < -margin) | (u > 1 + margin), axis=-1)] == -1)
    c = _fractions(image, boxes["boxes"][0]["corners"])
    in_crop = np.all((c >= 0.05) & (c <= 0.95), axis=-1) & clear
    assert in_crop.sum() > 20 and np.all(truth[in_crop] > 0)
    centre = np.rint(image.ras_to_index(np.array(boxes["boxes"][0]["center"]))).astype(int)  # (i, j, k)
    if np.all(centre >= 0) and np.all(centre < image.shape[::-1]):
        k, j, i = centre[::-1]
        true_cells = [n for n, y in enumerate(result.summary["crops"][0]["true"]) if y > 0]
        assert cells[k, j, i] in true_cells and truth[k, j, i] > 0


def test_voco_grid_and_truth_follow_boxes_json(voco_inspections, voco_cpu_bundle, held_out_phantoms, oblique_phantom):
    from ssl3d.pretext.voco_bundle import load_voco_bundle

    images = [*held_out_phantoms, oblique_phantom[0]]
    for result, image in zip(_all(voco_inspections), images):
        _check_against_boxes_json(result, image, 4)
    _, mapping = load_voco_bundle(voco_cpu_bundle).prepare(oblique_phantom[0])
    box = inspect_voco(voco_cpu_bundle, oblique_phantom[0], boxes=[_ras_of_model_voxel(mapping, (44, 14, 16))])  # off the diagonal
    assert box.summary["crops"][0]["center_grid_xy"] == [44, 14]
    _check_against_boxes_json(box, oblique_phantom[0], 4)


def _ras_of_model_voxel(mapping, xyz):
    return (mapping.model_affine @ np.array([*xyz, 1.0]))[:3]


def test_voco_box_is_the_crop_centred_there(voco_cpu_bundle, held_out_phantoms):
    from ssl3d.pretext.voco_bundle import load_voco_bundle

    image = held_out_phantoms[0]
    _, mapping = load_voco_bundle(voco_cpu_bundle).prepare(image)
    inside, edge = _ras_of_model_voxel(mapping, (30, 21, 16)), _ras_of_model_voxel(mapping, (2, 61, 16))
    volumes, s = voco_map(voco_cpu_bundle, image, boxes=[inside, edge])
    first, second = s["crops"]
    assert first["center_grid_xy"] == [30, 21] and not first["clamped"] and s["mode"] == "box"
    assert second["center_grid_xy"] == [8, 55] and second["clamped"]  # moved so the 16-voxel crop stays in the grid
    corners = np.array(first["corners"])
    assert np.all(corners.min(0) <= inside) and np.all(inside <= corners.max(0))
    expected = position_labels(np.array([[30, 21]]), 16, 16, 4)[0]
    assert sorted(np.unique(volumes["truth"].array[volumes["grid"].array > 0])) == sorted(set(expected.astype(np.float32)))


def test_voco_box_p_is_the_training_layouts(voco_inspections, voco_cpu_bundle, held_out_phantoms):
    # A box is scored among seeded random companions in the training batch layout (4 volumes x 4 crops + base
    # crops). Measured on this bundle: p moves by <= 0.07 between companion seeds and by <= 0.05 from the same
    # crop in random mode; the old layout (one volume, the group filled with copies of the box) was 0.07-0.22 off.
    from ssl3d.pretext.voco_bundle import load_voco_bundle

    image, random_mode = held_out_phantoms[0], voco_inspections["held_out"][0].summary
    _, mapping = load_voco_bundle(voco_cpu_bundle).prepare(image)
    crops = random_mode["crops"][:4]
    boxes = [_ras_of_model_voxel(mapping, (*c["center_grid_xy"], 16)) for c in crops]
    runs = [voco_map(voco_cpu_bundle, image, boxes=boxes, seed=seed)[1] for seed in (1, 2)]
    for s in runs:
        assert s["layout"]["volumes_per_pass"] == 4 and s["layout"]["crops_asked_per_pass"] == 1 and s["layout"]["passes"] == 4
        assert s["layout"]["companion_crops"] == 4 * 15 and [c["center_grid_xy"] for c in s["crops"]] == [c["center_grid_xy"] for c in crops]
    p1, p2 = (np.array([c["predicted"] for c in s["crops"]]) for s in runs)
    assert 0 < np.abs(p1 - p2).max() < 0.08  # companions matter a little, the layout not at all
    assert np.abs(p1 - np.array([c["predicted"] for c in crops])).max() < 0.08
    assert random_mode["layout"]["passes"] == 1 and random_mode["layout"]["companion_crops"] == 0


def test_ill_voco_box_outside_the_volume(voco_cpu_bundle, held_out_phantoms):
    image = held_out_phantoms[0]
    outside = image.ijk_to_ras @ np.array([-3.0, 10, 10, 1])
    with pytest.raises(InputError, match="lies outside the volume"):
        voco_map(voco_cpu_bundle, image, boxes=[outside[:3]])


def test_trained_bundle_localises_better_than_untrained(voco_inspections, voco_untrained_bundle, held_out_phantoms):
    untrained = [inspect_voco(voco_untrained_bundle, image, dense=True, seed=0) for image in held_out_phantoms]

    def score(results, key):
        return float(np.mean([key(r.summary) for r in results]))

    trained = voco_inspections["held_out"]
    for name, key, margin in (("top-1", lambda s: s["top1_accuracy"], 0.15), ("mass on true cells", lambda s: s["mean_mass_on_true"], 0.1),
                              ("dense localisation", lambda s: s["dense"]["mean_localisation"], 0.1)):
        assert score(trained, key) >= score(untrained, key) + margin, (name, score(trained, key), score(untrained, key))


def test_voco_v2_geometry_truth_and_scores(voco_v2_inspections, voco_v2_bundle, held_out_phantoms, oblique_phantom):
    import torch
    import torch.nn.functional as F

    from ssl3d.pretext.voco_bundle import load_voco_bundle

    scorer = load_voco_bundle(voco_v2_bundle)
    for (name, result), image in zip(voco_v2_inspections.items(), (held_out_phantoms[0], oblique_phantom[0])):
        s = result.summary
        assert s["version"] == 2 and s["cells"] == 9 and s["grid_box"]["size_xyz"] == [48, 48, 16], name
        for key, volume in result.volumes.items():
            assert volume.same_grid(image, atol=1e-9), (name, key)
        _check_against_boxes_json(result, image, 3)
        grid, truth = result.volumes["grid"].array, result.volumes["truth"].array
        labels = position_labels(np.array([s["crops"][0]["center_grid_xy"]]), 16, 16, 3)[0]
        for cell in np.unique(grid[grid > 0]):
            assert np.all(truth[grid == cell] == np.float32(labels[cell - 1])), (name, cell)
        # relu cos(x_s, b_t), computed here: the grid window cut from the model volume by hand, the 16 crops
        # and 4 x 9 base crops in one batch (the inspection's one pass), the student and teacher heads on
        # the shared backbone's features
        model = scorer.prepare(image)[0][0].numpy()
        window = np.zeros((16, 48, 48), np.float32)
        ox, oy, oz = s["grid_box"]["origin_model_xyz"]
        z, y, x = (np.arange(n) + o for n, o in zip(window.shape, (oz, oy, ox)))
        keep = [(v >= 0) & (v < m) for v, m in zip((z, y, x), model.shape)]
        window[np.ix_(*keep)] = model[np.ix_(z[keep[0]], y[keep[1]], x[keep[2]])]
        crops = [window[:, cy - 8:cy + 8, cx - 8:cx + 8] for cx, cy in (c["center_grid_xy"] for c in s["crops"])]
        bases = [window[:, iy * 16:(iy + 1) * 16, ix * 16:(ix + 1) * 16] for ix in range(3) for iy in range(3)]
        batch = torch.from_numpy(np.stack(crops + bases * 4))[:, None]
        with torch.no_grad():
            features = scorer.net.student.backbone(batch)
            x_s, b_t = scorer.net.student.head(features)[:16], scorer.net.teacher.head(features)[16:25]
            expected = F.relu(F.normalize(x_s, dim=1) @ F.normalize(b_t, dim=1).T).numpy()
        np.testing.assert_allclose(np.array([c["predicted"] for c in s["crops"]]), expected, atol=1e-4, err_msg=name)


def test_voco_small_volume_and_empty_foreground(tmp_path, capsys, voco_cpu_bundle, voco_v2_bundle, phantom):
    image = phantom[0]
    small = Volume(np.ascontiguousarray(image.array[12:20, 18:30, 19:29]), image.ijk_to_ras)  # (k, j, i) = (8, 12, 10)
    for bundle in (voco_cpu_bundle, voco_v2_bundle):
        volumes, s = voco_map(bundle, small, seed=0)
        assert all(v.same_grid(small) for v in volumes.values()) and (volumes["grid"].array > 0).all(), bundle
        assert 0 < s["crops"][0]["predicted"][s["crops"][0]["predicted_cell"]] <= 1
    empty = Volume(np.full((8, 12, 10), -1000, np.int16), image.ijk_to_ras)
    path = write_volume(empty, tmp_path / "air.nii.gz")
    for bundle in (voco_cpu_bundle, voco_v2_bundle):
        with pytest.raises(InputError, match="^no foreground: "):
            voco_map(bundle, empty)
        out = tmp_path / "out"
        assert main(["inspect", "voco", "--model", str(bundle), "--input", str(path), "--out", str(out), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: no foreground: ")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["air.nii.gz"]


def test_ill_voco_bundles(tmp_path, voco_cpu_bundle, vf_small_bundle, phantom):
    from ssl3d.bundle import read_bundle, write_bundle

    trained = read_bundle(voco_cpu_bundle)
    meta = {k: v for k, v in trained.meta.items() if k != "schema"}
    imported = write_bundle(tmp_path / "imported", trained.state_dict(), {**meta, "pretext": {**meta["pretext"], "heads": None}})
    with pytest.raises(BundleError, match="no VoCo heads"):
        voco_map(imported, phantom[0])
    with pytest.raises(BundleError, match="use 'ssl3d inspect vf'"):
        voco_map(vf_small_bundle, phantom[0])
    with pytest.raises(BundleError, match="use 'ssl3d inspect voco'"):
        fusion_map(voco_cpu_bundle, phantom[0])


# ---------------------------------------------------------------------------------------------- Volume Fusion


@pytest.fixture(scope="module")
def vf_inspections(vf_small_bundle, phantom, oblique_phantom):
    """{(phantom, fusion): Inspection} for the bundle's v1 generator and the vf-v2-cpu override."""
    return {(name, fusion): inspect_fusion(vf_small_bundle, image[0], seed=3, fusion=fusion)
            for name, image in (("phantom", phantom), ("oblique", oblique_phantom)) for fusion in (None, "vf-v2-cpu")}


def test_vf_volumes_have_the_input_grid_and_satisfy_the_fusion_relation(vf_inspections, phantom, oblique_phantom):
    images = {"phantom": phantom[0], "oblique": oblique_phantom[0]}
    for (name, fusion), result in vf_inspections.items():
        v = result.volumes
        assert set(v) == VF_VOLUMES
        for key, volume in v.items():
            assert volume.same_grid(images[name], atol=1e-9), (name, fusion, key)
        truth, pred = v["truth"].array, v["predicted"].array
        assert truth.dtype == np.uint8 and truth.max() <= 4 and len(np.unique(truth)) == 5
        alpha = truth.astype(np.float64) / 4
        expected = alpha * v["foreground"].array + (1 - alpha) * v["background"].array
        np.testing.assert_allclose(v["fused"].array, expected, atol=1e-5)
        assert np.array_equal(v["error"].array, np.abs(pred.astype(int) - truth.astype(int)))
        assert 0.2 <= v["confidence"].array.min() and v["confidence"].array.max() <= 1.0 + 1e-6  # max of 5 softmax values
        assert result.summary["fusion_preset"] == (fusion or "vf-v1-cpu") and result.summary["coverage"] == 1.0
    v1 = vf_inspections[("phantom", None)].volumes
    np.testing.assert_allclose(v1["background"].array, apply_intensity(phantom[0].array, "window:-1000,1000,-1,1"), atol=1e-6)


def _check_vf_summary(result):
    """Every number of the summary recomputed from the written class volumes."""
    s, truth, pred = result.summary, result.volumes["truth"].array, result.volumes["predicted"].array
    confusion = np.array(s["confusion"])
    assert confusion.sum() == truth.size == s["voxels"]
    for t, p in itertools.product(range(5), repeat=2):
        assert confusion[t, p] == int(((truth == t) & (pred == p)).sum()), (t, p)
    dices = []
    for c, entry in enumerate(s["per_class"]):
        true, predicted, both = int((truth == c).sum()), int((pred == c).sum()), int(((truth == c) & (pred == c)).sum())
        assert entry["true_voxels"] == true and entry["predicted_voxels"] == predicted
        assert entry["accuracy"] == (pytest.approx(both / true) if true else None)
        assert entry["dice"] == (pytest.approx(2 * both / (true + predicted)) if true + predicted else None)
        assert entry["alpha"] == c / 4 and entry["name"] == s["class_names"][c]
        dices += [entry["dice"]] if c and entry["dice"] is not None else []
    recalls = [e["accuracy"] for e in s["per_class"] if e["true_voxels"]]
    assert s["balanced_accuracy"] == pytest.approx(np.mean(recalls)) and s["accuracy"] == pytest.approx((truth == pred).mean())
    assert s["fg_dice"] == pytest.approx(np.mean(dices))


def test_vf_summary_agrees_with_the_volumes(vf_inspections):
    for result in vf_inspections.values():
        _check_vf_summary(result)
        assert result.texts["alpha.ctbl"].splitlines()[2] == "0 alpha_0 0 0 0 0"
        assert result.pictures["fusion.png"].shape[2] == 3


def test_vf_trained_bundle_beats_chance_and_its_summary_agrees(vf_cpu_bundle):
    # the session's trained vf-v2-cpu bundle (Testing/conftest.py) on a held-out phantom of its training size;
    # measured: balanced accuracy 0.28-0.30 (chance 0.2), confidence 0.48 where right, 0.40 where wrong
    from ssl3d.data.phantoms import make_phantom

    image = make_phantom(900, shape=(48, 64, 64))[0]
    result = inspect_fusion(vf_cpu_bundle, image, seed=0)
    _check_vf_summary(result)
    s = result.summary
    assert all(v.same_grid(image) for v in result.volumes.values()) and s["fusion_preset"] == "vf-v2-cpu"
    assert s["balanced_accuracy"] >= s["chance_balanced_accuracy"] + 0.04, s["balanced_accuracy"]
    assert s["mean_confidence_right"] > s["mean_confidence_wrong"]


def test_vf_sample_is_seeded(vf_small_bundle, phantom):
    a, _ = fusion_map(vf_small_bundle, phantom[0], seed=5)
    b, _ = fusion_map(vf_small_bundle, phantom[0], seed=5)
    c, _ = fusion_map(vf_small_bundle, phantom[0], seed=6)
    assert np.array_equal(a["truth"].array, b["truth"].array) and np.array_equal(a["predicted"].array, b["predicted"].array)
    assert not np.array_equal(a["truth"].array, c["truth"].array)


# ---------------------------------------------------------------------------------------------- command


def test_cli_voco_writes_what_slicer_reads(tmp_path, capsys, voco_cpu_bundle, held_out_phantoms):
    from ssl3d.pretext.voco_bundle import load_voco_bundle

    image = held_out_phantoms[1]
    path = write_volume(image, tmp_path / "ct.nii.gz")
    _, mapping = load_voco_bundle(voco_cpu_bundle).prepare(read_volume(path))
    box = ",".join(f"{v:.3f}" for v in _ras_of_model_voxel(mapping, (40, 24, 10)))
    out = tmp_path / "out"
    assert main(["inspect", "voco", "--model", str(voco_cpu_bundle), "--input", str(path), "--out", str(out), "--box", box, "--device", "cpu"]) == 0
    assert "crop 0: predicted cell" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert names == {"grid.nrrd", "predicted.nrrd", "truth.nrrd", "boxes.json", "summary.json", "voco.png", "run.json"}
    summary = json.loads((out / "summary.json").read_text())
    boxes = json.loads((out / "boxes.json").read_text())
    assert summary["crops"][0]["center_grid_xy"] == [40, 24] and len(summary["crops"][0]["true"]) == 16
    assert len(boxes["boxes"][0]["corners"]) == 8 and boxes["boxes"][0]["requested"] == pytest.approx([float(v) for v in box.split(",")])
    predicted = read_volume(out / "predicted.nrrd")
    assert predicted.same_grid(image) and predicted.array.dtype == np.float32


def test_cli_vf_writes_what_slicer_reads(tmp_path, capsys, vf_small_bundle, oblique_phantom):
    path = write_volume(oblique_phantom[0], tmp_path / "ct.nrrd")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "summary.json").write_text("{}")  # an earlier inspection is replaced
    args = ["inspect", "vf", "--model", str(vf_small_bundle), "--input", str(path), "--out", str(out), "--seed", "2", "--fusion", "vf-v2-cpu",
            "--device", "cpu", "--events", str(tmp_path / "events.jsonl")]
    assert main(args) == 0
    shown = capsys.readouterr()
    assert "balanced accuracy" in shown.out
    progress = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "progress"]
    tiles = progress[-1]["total"]
    assert tiles > 1 and [e["step"] for e in progress][-1] == tiles  # one event per forward pass of tiles
    # off a terminal: the first pass and the last, then a line per 30 s (a progress bar on a terminal)
    lines = shown.err.splitlines()
    assert lines[0].startswith(f"inspect vf: ") and lines[-1].startswith(f"inspect vf: {tiles}/{tiles} tiles, ")
    assert {f"{k}.nrrd" for k in VF_VOLUMES} | {"alpha.ctbl", "fusion.png", "summary.json", "run.json"} == {p.name for p in out.iterdir()}
    assert json.loads((out / "summary.json").read_text())["fusion"]["version"] == 2
    assert read_volume(out / "truth.nrrd").same_grid(oblique_phantom[0])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _bad_inputs(tmp_path, voco_cpu_bundle, vf_small_bundle, image):
    from ssl3d.bundle import read_bundle, write_bundle

    good = write_volume(image, tmp_path / "ct.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")
    vf = read_bundle(vf_small_bundle)
    meta = {"network": vf.network, "task": "segmentation", "preprocessing": vf.meta["preprocessing"]}
    segmentation = write_bundle(tmp_path / "seg", vf.state_dict(), meta).path
    voco, v, s = str(voco_cpu_bundle), str(vf_small_bundle), str(segmentation)
    return {
        "segmentation bundle (voco)": (["voco", "--model", s, "--input", str(good)], "not a VoCo|segmentation bundle"),
        "segmentation bundle (vf)": (["vf", "--model", s, "--input", str(good)], "segmentation bundle"),
        "box outside": (["voco", "--model", voco, "--input", str(good), "--box", "1000,1000,1000"], "outside the volume"),
        "bad box": (["voco", "--model", voco, "--input", str(good), "--box", "1,2"], "--box must be R,A,S"),
        "unreadable file": (["voco", "--model", voco, "--input", str(broken)], "broken.nii.gz"),
        "missing file": (["vf", "--model", v, "--input", str(tmp_path / "none.nii.gz")], "no such file"),
        "unknown fusion": (["vf", "--model", v, "--input", str(good), "--fusion", "vf-v3"], "Did you mean"),
        "random 0": (["voco", "--model", voco, "--input", str(good), "--random", "0"], "--random must be >= 1"),
    }


def test_ill_cli_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, voco_cpu_bundle, vf_small_bundle, phantom):
    cases = _bad_inputs(tmp_path, voco_cpu_bundle, vf_small_bundle, phantom[0])
    before = set(tmp_path.iterdir())
    for name, (args, message) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        assert main(["inspect", *args, "--out", str(out), "--device", "cpu"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (name, err)
        assert any(part in err[0] for part in message.split("|")), (name, err)
        assert set(tmp_path.iterdir()) == before, name  # no --out, no temporary folder


def test_ill_cli_out_is_not_an_inspection_folder(tmp_path, capsys, vf_small_bundle, phantom):
    path = write_volume(phantom[0], tmp_path / "ct.nii.gz")
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["inspect", "vf", "--model", str(vf_small_bundle), "--input", str(path), "--out", str(out)]) == 2
    assert "not an inspection folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------------------------------------- demo


def test_demo_stage_adds_both_pictures(tmp_path, voco_cpu_bundle, vf_small_bundle):
    from ssl3d.demo import DemoContext
    from ssl3d.demo.inspect_stage import run as demo_stage
    from ssl3d.events import EventWriter

    ctx = DemoContext(tmp_path, True, "cpu", 0, EventWriter(None))
    ctx.shared.update(voco_bundle=voco_cpu_bundle, vf_bundle=vf_small_bundle)
    demo_stage(ctx)
    assert ctx.outputs["VoCo inspection"].is_file() and ctx.outputs["VF inspection"].is_file()
    assert (tmp_path / "inspect" / "voco" / "localisation.nrrd").is_file()


def test_write_inspection_replaces_only_inspections(tmp_path, vf_inspections):
    result = next(iter(vf_inspections.values()))
    files = write_inspection(result, tmp_path / "a")
    assert json.loads(files["summary"].read_text())["files"] == sorted(p.name for p in (tmp_path / "a").iterdir())
    assert write_inspection(result, tmp_path / "a")["summary"].is_file()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cancel").write_text("left by a cancelled Slicer job")
    (tmp_path / "b" / "events.jsonl").write_text("{}\n")
    write_inspection(result, tmp_path / "b")
    assert not (tmp_path / "b" / "cancel").exists() and (tmp_path / "b" / "events.jsonl").read_text() == "{}\n"
    with pytest.raises(InputError, match="is a file"):
        write_inspection(result, files["summary"])
    assert isinstance(result.volumes["fused"], Volume)
