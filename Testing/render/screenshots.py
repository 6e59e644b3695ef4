"""``make screenshots``: the pictures a user sees in Slicer, rendered by Slicer's own slice views (slicer-core's
slice logic and displayable managers, offscreen) from the demo's bundles, into ``Resources/Screenshots``.

Scenes are built with the same ``ssl3d.mrml`` calls the modules make: ``load_inspection`` +
``show_inspection`` (SSLPretrain), ``load_segmentation_file`` and ``point_list_node`` (SSLSegment).
Pictures:

* ``SSLPretrain.png`` (catalog): VoCo's predicted weights over the real lung1 CT with the base-crop grid and
  the crop's ROI, in the axial, sagittal and coronal views;
* ``voco_overlays.png``: predicted weights, true weights, dense localisation (axial);
* ``vf_maps.png``: Volume Fusion's fused image, true alpha, predicted alpha, error, confidence (axial);
* ``SSLSegment.png`` (catalog): a multi-organ segmentation of a held-out phantom by the demo's chosen
  fine-tuned bundle (axial, coronal) and two include clicks with the click model's result.

Usage: ``python Testing/render/screenshots.py [--demo demo_out] [--out Resources/Screenshots]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from slice_views import OffscreenSlicer, offscreen_problem, save_png  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VIEW = (360, 360)
OPACITY = 0.5  # SSLPretrain's overlay opacity default


def pick_bundle(demo: Path, task: str, pretext: str | None = None) -> Path:
    """The demo's bundle of ``task`` (and pretext method): the best validation score, else the newest."""
    found = []
    for meta_file in demo.rglob("bundle.json"):
        meta = json.loads(meta_file.read_text())
        method = (meta.get("pretext") or {}).get("method")
        if meta.get("task") == task and (pretext is None or method == pretext):
            score = ((meta.get("metrics") or {}).get("validation") or {}).get("score")
            found.append((score if isinstance(score, (int, float)) else -1.0, meta_file.stat().st_mtime, meta_file))
    if not found:
        raise SystemExit(f"error: no {pretext or task} bundle under {demo}: run `make demo` first.")
    return max(found)[2].parent


def chosen_segmentation_bundle(demo: Path) -> Path:
    """The fine-tuned bundle the demo names (its best study cell), else the best-scoring one."""
    outputs = json.loads((demo / "demo.json").read_text()).get("outputs", {})
    named = [Path(path) for key, path in outputs.items() if key.startswith("fine-tuned bundle")]
    return named[0] if named and (named[0] / "bundle.json").is_file() else pick_bundle(demo, "segmentation")


def versions() -> str:
    from importlib.metadata import version

    return f"slicer-core {version('slicer-core')}, VTK {version('vtk')}, offscreen"


def caption(picture: np.ndarray, text: str) -> np.ndarray:
    from ssl3d.pictures import text_strip

    return np.concatenate([text_strip(picture.shape[1], text), picture], axis=0)


def row(pictures: list[np.ndarray], gap: int = 4) -> np.ndarray:
    height = max(p.shape[0] for p in pictures)
    spacer = np.full((height, gap, 3), 40, np.uint8)
    parts = []
    for picture in pictures:
        parts += [picture, spacer]
    return np.concatenate(parts[:-1], axis=1)


def column(pictures: list[np.ndarray]) -> np.ndarray:
    width = max(p.shape[1] for p in pictures)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in pictures]
    return np.concatenate(padded, axis=0)


def voco_pictures(demo: Path, work: Path) -> tuple[np.ndarray, np.ndarray]:
    from ssl3d import mrml
    from ssl3d.data.samples import load_sample
    from ssl3d.inspect import inspect_voco, write_inspection

    ct = load_sample("lung1")[0]
    folder = work / "voco"
    inspection = inspect_voco(pick_bundle(demo, "pretext", "voco"), ct, dense=True, seed=0)
    write_inspection(inspection, folder)
    crop = inspection.summary["crops"][inspection.summary["maps_show_crop"]]
    host = OffscreenSlicer()
    views = [host.slice_view(name, VIEW) for name in ("Red", "Yellow", "Green")]
    node = mrml.volume_to_node(ct, host.scene, "lung1")
    ct_window(node, 1400, -500)
    loaded = mrml.load_inspection("voco", folder, host.scene, "lung1")
    mrml.show_inspection(host.scene, loaded, "Predicted weights", OPACITY, node)
    for view in views:
        view.fit().jump(crop["center"])
    three = row([view.render() for view in views])
    axial = []
    for chosen in ("Predicted weights", "True weights", "Localisation (dense)"):
        mrml.show_inspection(host.scene, loaded, chosen, OPACITY, node)
        axial.append(caption(views[0].render(), chosen))
    host.close()
    where = (f"VoCo inspection of lung1 (demo bundle): crop 0 truly in cell(s) {crop['true_cells']}, "
             f"predicted cell {crop['predicted_cell']}. Slicer's slice views ({versions()})")
    return caption(three, where), caption(row(axial), f"VoCo overlays, axial ({versions()})")


def vf_picture(demo: Path, work: Path) -> np.ndarray:
    from ssl3d import mrml
    from ssl3d.data.phantoms import make_phantom
    from ssl3d.inspect import inspect_fusion, write_inspection

    image = make_phantom(950, shape=(48, 64, 64))[0]
    folder = work / "vf"
    inspection = inspect_fusion(pick_bundle(demo, "pretext", "vf"), image, seed=0)
    write_inspection(inspection, folder)
    host = OffscreenSlicer()
    view = host.slice_view("Red", VIEW)
    node = mrml.volume_to_node(image, host.scene, "phantom")
    loaded = mrml.load_inspection("vf", folder, host.scene, "phantom")
    mrml.show_layers(host.scene, background=loaded["fused"][0])
    view.fit().jump((image.ijk_to_ras @ np.array([32, 32, 24, 1.0]))[:3])
    pictures = [caption(view.render(), "Fused input")]
    for chosen in ("True alpha", "Predicted alpha", "Error", "Confidence"):
        mrml.show_inspection(host.scene, loaded, chosen, 0.8, node)
        pictures.append(caption(view.render(), chosen))
    host.close()
    accuracy = inspection.summary.get("balanced_accuracy")
    return caption(row(pictures), f"Volume Fusion inspection of a held-out phantom (demo bundle, balanced accuracy "
                                  f"{accuracy:.2f}, chance 0.20); Slicer's slice views ({versions()})")


def segment_picture(demo: Path, work: Path) -> np.ndarray:
    from ssl3d import mrml
    from ssl3d.bundle import read_bundle
    from ssl3d.data.phantoms import make_phantom
    from ssl3d.infer.interactive import InteractiveSession
    from ssl3d.infer.segment import segment, write_outputs

    image, truth = make_phantom(997, shape=(32, 48, 48))
    bundle = chosen_segmentation_bundle(demo)
    result = segment(bundle, image, device="cpu")
    output = write_outputs(result, work / "segmentation.seg.nrrd")
    host = OffscreenSlicer()
    views = [host.slice_view(name, VIEW) for name in ("Red", "Green")]
    node = mrml.volume_to_node(image, host.scene, "phantom")
    ct_window(node)
    mrml.show_layers(host.scene, background=node)
    labels = mrml.bundle_labels(read_bundle(bundle).meta)
    mrml.load_segmentation_file(output["segmentation"], host.scene, node, labels=labels)
    found = np.argwhere(result.labels.array > 0)  # the views go through what the model found
    k, j, i = found[len(found) // 2] if len(found) else np.array(image.shape) // 2
    for view in views:
        view.fit().jump((image.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3])
    pictures = [caption(view.render(), f"Segmentation, {view.node.GetOrientation().lower()}") for view in views]
    host.close()
    # click to segment: two include clicks in the liver, the interactive model's mask as one segment
    host = OffscreenSlicer()
    view = host.slice_view("Red", VIEW)
    node = mrml.volume_to_node(image, host.scene, "phantom")
    ct_window(node)
    mrml.show_layers(host.scene, background=node)
    session = InteractiveSession(pick_bundle(demo, "interactive"), "cpu")
    session.set_volume(image)
    clicks = mrml.point_list_node(host.scene, "positive")
    liver = np.argwhere(truth.array == 1)
    k = liver[len(liver) // 2][0]
    in_slice = liver[liver[:, 0] == k]  # both clicks on the axial slice shown
    for k, j, i in (in_slice[len(in_slice) // 3], in_slice[2 * len(in_slice) // 3]):
        ras = (image.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]
        mask = session.add_point(ras, positive=True)
        clicks.AddControlPoint(*ras)
    mrml.labelmap_to_segmentation(mask, host.scene, {1: ("liver (clicks)", (0.85, 0.5, 0.4))}, node)
    view.fit().jump((image.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3])
    pictures.append(caption(view.render(), "Two include clicks and the result"))
    host.close()
    return caption(row(pictures), f"SSLSegment: a phantom segmented by the demo's fine-tuned bundle, and click to "
                                  f"segment; Slicer's slice views ({versions()})")


def ct_window(node, window: float = 350, level: float = 40) -> None:
    """One of Slicer's CT window/level presets, as a user picks it: CT-Abdomen (W 350, L 40) by default,
    CT-Lung (W 1400, L -500) for the chest CT."""
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(window, level)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "demo_out", help="the demo's output folder (make demo)")
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "Screenshots")
    args = parser.parse_args(argv)
    problem = offscreen_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not (args.demo / "demo.json").is_file():
        print(f"error: {args.demo}: no demo.json; run `make demo` first.", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        catalog, overlays = voco_pictures(args.demo, work)
        pictures = {"SSLPretrain.png": catalog, "voco_overlays.png": overlays, "vf_maps.png": vf_picture(args.demo, work),
                    "SSLSegment.png": segment_picture(args.demo, work)}
    for name, picture in pictures.items():
        save_png(picture, args.out / name)
        print(f"wrote {args.out / name} ({picture.shape[1]}x{picture.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
