"""Slicer's slice views without Slicer: slicer-core's slice logic and displayable managers, rendered offscreen.

Desktop Slicer shows a slice view with three pieces: ``vtkMRMLSliceLogic`` reslices and blends the
background, foreground and label layers into one RGBA image; CTK's light-box renderer manager draws that
image as a background 2D actor; the displayable managers (segmentations, markups) add their actors to the
same renderer. slicer-core has the first and the last but not CTK, so :class:`SliceView` draws the slice
logic's image itself, in the same order as ``qMRMLSliceView``: the image actor goes into the renderer before
the displayable managers are made. (Made the other way round, the segment fill is drawn before the image
and blends over black: a harness artefact, not something Slicer shows.)

The scene gets what Slicer's application sets up at start: default colour tables, the slice orientation
presets with patient right on screen left, and the markups and segmentations logics. Views render only
when asked, so building a scene costs no renders.

Offscreen rendering needs OpenGL without a display: VTK's EGL window with Mesa (``libegl1``,
``libgl1-mesa-dri``), chosen here with ``VTK_DEFAULT_OPENGL_WINDOW``; :func:`offscreen_problem` says why
not when it does not work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

_PROBE = """
import vtk
window = vtk.vtkRenderWindow()
window.SetOffScreenRendering(1)
window.SetSize(8, 8)
window.AddRenderer(vtk.vtkRenderer())
window.Render()
print(window.GetClassName())
"""

#: Slice view name -> orientation, as Slicer's conventional layout.
VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


def offscreen_problem() -> str | None:
    """None when VTK renders offscreen here, else why not (probed in a child: a missing GL can crash)."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)  # inherits the EGL choice
    except subprocess.TimeoutExpired:
        return "VTK's offscreen render did not finish in 120 s"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return f"VTK cannot render offscreen here (needs EGL and Mesa: libegl1, libgl1-mesa-dri): {tail[0]}"
    return None


class OffscreenSlicer:
    """A scene with the application logic and module logics that Slicer creates before any module runs."""

    def __init__(self) -> None:
        import slicer
        import vtk

        self.scene = slicer.vtkMRMLScene()
        self.app = slicer.vtkSlicerApplicationLogic()
        self.app.SetMRMLScene(self.scene)
        self.app.GetColorLogic().SetMRMLScene(self.scene)
        self.app.GetColorLogic().AddDefaultColorNodes()
        self.app.SetSliceLogics(vtk.vtkCollection())
        self.app.SetViewLogics(vtk.vtkCollection())
        self._logics = []
        for name, logic in (("Markups", slicer.vtkSlicerMarkupsLogic()),
                            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic())):
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.app)
            self.app.SetModuleLogic(name, logic)
            self._logics.append(logic)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene, True)  # patient right on screen left
        self.factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        self.factory.SetMRMLApplicationLogic(self.app)
        for manager in ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLMarkupsDisplayableManager",
                        "vtkMRMLModelSliceDisplayableManager"):
            if not self.factory.IsDisplayableManagerRegistered(manager):
                self.factory.RegisterDisplayableManager(manager)
        self.views: dict[str, SliceView] = {}

    def slice_view(self, name: str = "Red", size: tuple[int, int] = (384, 384)) -> "SliceView":
        """The slice view ``name`` (Red axial, Yellow sagittal, Green coronal), made on first use."""
        if name not in self.views:
            self.views[name] = SliceView(self, name, VIEWS[name], size)
        return self.views[name]

    def close(self) -> None:
        for view in self.views.values():
            view.close()
        self.views.clear()
        self.scene.Clear(1)  # the module logics keep the (empty) scene: detaching them only logs warnings


class SliceView:
    """One slice view: slice logic + image actor + displayable managers in an offscreen window."""

    def __init__(self, host: OffscreenSlicer, name: str, orientation: str, size: tuple[int, int]) -> None:
        import slicer
        import vtk

        self.size = tuple(int(s) for s in size)
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetAlphaBitPlanes(1)
        self.window.SetMultiSamples(0)  # as ctkVTKSliceView
        self.window.SetSize(*self.size)
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()  # markups widgets need one; it never starts
        self.interactor.SetRenderWindow(self.window)
        self.interactor.Initialize()
        # the blended slice image, drawn behind everything (CTK's light-box manager in Slicer)
        self.image_mapper = vtk.vtkImageMapper()
        self.image_mapper.SetColorWindow(255)
        self.image_mapper.SetColorLevel(127.5)
        self.image_actor = vtk.vtkActor2D()
        self.image_actor.SetMapper(self.image_mapper)
        self.image_actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.image_actor)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(host.factory, self.renderer)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(host.app)
        host.app.GetSliceLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(host.scene)
        self.node = self.logic.AddSliceNode(name)
        self.node.SetOrientation(orientation)
        self.managers.SetMRMLDisplayableNode(self.node)
        self.composite = self.logic.GetSliceCompositeNode()
        self.logic.ResizeSliceNode(*self.size)

    def fit(self) -> "SliceView":
        """Fit the view to its volumes (Slicer's "reset field of view")."""
        self.logic.ResizeSliceNode(*self.size)
        self.logic.FitSliceToAll()
        return self

    def jump(self, ras: Sequence[float]) -> "SliceView":
        """Move the slice through ``ras`` without panning (Slicer's jump by offsetting)."""
        self.node.JumpSliceByOffsetting(*[float(v) for v in ras])
        return self

    def render(self) -> np.ndarray:
        """The view as RGB uint8 (rows, cols, 3), row 0 at the top of the screen."""
        import vtk
        from vtk.util import numpy_support

        self.image_mapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.ReadFrontBufferOff()
        grab.SetInputBufferTypeToRGB()
        grab.Update()
        image = grab.GetOutput()
        cols, rows, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, cols, 3)
        return np.ascontiguousarray(pixels[::-1])

    def xy_to_ras(self) -> np.ndarray:
        """The slice node's XY (view pixels, origin bottom left) -> RAS matrix (4, 4)."""
        matrix = self.node.GetXYToRAS()
        return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])

    def pixel(self, ras: Sequence[float]) -> tuple[int, int]:
        """(row, col) on the rendered picture of a RAS point (projected onto the slice plane)."""
        x, y, _, _ = np.linalg.inv(self.xy_to_ras()) @ np.array([*map(float, ras), 1.0])
        return int(round(self.size[1] - 1 - y)), int(round(x))

    def ras(self, row: float, col: float) -> np.ndarray:
        """The RAS point under a picture pixel (inverse of :meth:`pixel`)."""
        return (self.xy_to_ras() @ np.array([float(col), self.size[1] - 1 - float(row), 0.0, 1.0]))[:3]

    def close(self) -> None:
        self.managers.SetMRMLDisplayableNode(None)
        self.logic.SetMRMLScene(None)
        self.window.Finalize()


def save_png(picture: np.ndarray, path: Any) -> None:
    from PIL import Image

    Image.fromarray(picture).save(path)
