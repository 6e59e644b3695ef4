"""Does each render assertion catch the display setting it checks? Break one setting at a time, in a copy of
the code, and run the render tier: every mutation must make at least one test fail (and the tier must pass
without one). Run: ``.venv/bin/python Testing/render/check_mutations.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: name -> (file, text, replacement): one display setting broken. (Not here: the heat maps' display threshold.
#: With it off, zero still shows the image, through the heat table's alpha 0 at 0; with it on, Slicer draws the
#: layer opaque above the threshold, which is what the tests expect.)
MUTATIONS = {
    "heat maps through Slicer's grey table": (
        "ssl3d/mrml/overlays.py", 'color_table=heat_table_node(scene), threshold=HEAT_THRESHOLD * heat_top',
        'color_table="vtkMRMLColorTableNodeGrey", threshold=HEAT_THRESHOLD * heat_top'),
    "alpha maps through Slicer's label colours": (
        "ssl3d/mrml/overlays.py", 'color_table=alpha_table_node(scene), labelmap=True',
        'color_table="vtkMRMLColorTableNodeLabels", labelmap=True'),
    "overlay opacity 0": (
        "ssl3d/mrml/overlays.py", 'foreground_opacity=opacity,', 'foreground_opacity=0.0,'),
    "alpha label opacity 0": (
        "ssl3d/mrml/overlays.py", 'show_layers(scene, background, None, node, label_opacity=opacity)',
        'show_layers(scene, background, None, node, label_opacity=0.0)'),
    "grid filled, not outlined": (
        "ssl3d/mrml/overlays.py", 'label_outline=grid is not None)', 'label_outline=False)'),
    "segment fill opacity 0": ("ssl3d/mrml/segmentations.py", 'SEGMENT_FILL_OPACITY, SEGMENT_OUTLINE_OPACITY = 0.5, 1.0',
                               'SEGMENT_FILL_OPACITY, SEGMENT_OUTLINE_OPACITY = 0.0, 1.0'),
    "segment outline off": ("ssl3d/mrml/segmentations.py", 'display.SetVisibility2DOutline(True)', 'display.SetVisibility2DOutline(False)'),
    "crop ROI axis-aligned": ("ssl3d/mrml/markups.py", '    frame = box_frame(points)\n', '    frame = None\n'),
    "include/exclude colours swapped": (
        "ssl3d/mrml/markups.py", 'POINT_COLORS = {"positive": (0.2, 0.8, 0.3), "negative": (0.9, 0.2, 0.2)}',
        'POINT_COLORS = {"positive": (0.9, 0.2, 0.2), "negative": (0.2, 0.8, 0.3)}'),
    "patient right on screen right": (
        "Testing/render/slice_views.py", 'AddDefaultSliceOrientationPresets(self.scene, True)',
        'AddDefaultSliceOrientationPresets(self.scene, False)'),
    "volume written with a flipped R axis": (
        "ssl3d/mrml/volumes.py", '    node.SetIJKToRASMatrix(to_vtk(volume.ijk_to_ras))\n',
        '    node.SetIJKToRASMatrix(to_vtk(np.diag([-1.0, 1.0, 1.0, 1.0]) @ volume.ijk_to_ras))\n'),
}


def run_tier(copy: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "Testing/render"],
                          cwd=copy, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(copy)})


def main() -> int:
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (file, text, replacement) in [("none", (None, None, None))] + list(MUTATIONS.items()):
            copy = Path(tmp) / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            for part in ("ssl3d", "Testing", "pyproject.toml"):
                (shutil.copytree if (ROOT / part).is_dir() else shutil.copy)(ROOT / part, copy / part)
            if file:
                source = (copy / file).read_text()
                assert source.count(text) == 1, f"{name}: the text to break is not in {file} exactly once"
                (copy / file).write_text(source.replace(text, replacement))
            done = run_tier(copy)
            summary = (done.stdout.strip().splitlines() or ["?"])[-1]
            caught = done.returncode != 0
            verdict = ("FAILED" if caught else "clean") if name == "none" else ("caught" if caught else "MISSED")
            print(f"{verdict:7} {name}: {summary}", flush=True)
            if (name == "none") == caught:
                missed.append(name)
    print("every mutation caught" if not missed else f"not as expected: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
