"""Static checks of the Slicer extension: it compiles, its .ui files load, its CMake lists every file,
its modules import with stand-in Slicer modules, and the engine stays free of GUI imports.

The modules cannot run here (no Slicer application); their in-Slicer tests are the <Module>Test classes.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SSLPretrain", "SSLSegment")
GUI_PACKAGES = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "PythonQt", "PySide6", "PyQt5", "SampleData"}
HEAVY_PACKAGES = ("torch", "monai", "SimpleITK", "psutil", "nibabel", "scipy")
IGNORED = ("__pycache__", ".pyc", ".pyo")

#: Slicer's custom widget classes used in .ui files: base class, and whether it emits / receives the scene.
SLICER_WIDGETS = {
    "qMRMLWidget": ("QWidget", True, True),
    "qSlicerWidget": ("QWidget", False, True),
    "ctkCollapsibleButton": ("QWidget", False, False),
    "ctkPathLineEdit": ("QWidget", False, False),
    "ctkSliderWidget": ("QWidget", False, False),
    "qMRMLNodeComboBox": ("QWidget", False, True),
    "qMRMLCheckableNodeComboBox": ("qMRMLNodeComboBox", False, True),
    "qMRMLPlotWidget": ("qMRMLWidget", True, True),
    "qMRMLTableView": ("QTableView", False, True),
    "qMRMLSegmentSelectorWidget": ("qMRMLWidget", True, True),
    "qMRMLSegmentEditorWidget": ("qMRMLWidget", True, True),
    "qSlicerMarkupsPlaceWidget": ("qSlicerWidget", False, True),
}
SCENE_SIGNAL = "mrmlSceneChanged(vtkMRMLScene*)"
SCENE_SLOT = "setMRMLScene(vtkMRMLScene*)"
HARMLESS_QT_MESSAGES = ("propagateSizeHints",)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(part in IGNORED for part in p.parts)
                  and p.suffix not in IGNORED)


def _python_files() -> list[Path]:
    return [p for base in (*MODULES, "ssl3d") for p in _files(ROOT / base) if p.suffix == ".py"]


def _ui_files() -> list[Path]:
    return [p for module in MODULES for p in _files(ROOT / module) if p.suffix == ".ui"]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ------------------------------------------------------------------------------------------ python
@pytest.mark.parametrize("path", _python_files(), ids=_rel)
def test_python_file_compiles(path):
    compile(path.read_text(encoding="utf-8"), str(path), "exec")


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level package names imported outside functions and classes (including under if/try)."""
    names, stack = set(), list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            stack += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            stack += [h for handler in getattr(node, "handlers", []) for h in handler.body]
    return names


@pytest.mark.parametrize("path", [p for p in _python_files() if _rel(p).startswith("ssl3d/")], ids=_rel)
def test_engine_has_no_module_level_gui_import(path):
    imported = _module_level_imports(ast.parse(path.read_text(encoding="utf-8")))
    allowed = {"slicer", "vtk"} if _rel(path).startswith("ssl3d/mrml/") else set()
    assert not (imported & GUI_PACKAGES) - allowed, f"{_rel(path)} imports {sorted(imported & GUI_PACKAGES)} at module level"


def _sibling_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(sibling module, names) for each ``from .x import ...`` of an ``ssl3d/mrml/`` file ("" for the package)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.append((node.module or "", [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ssl3d.mrml"):
            found.append(((node.module or "").removeprefix("ssl3d.mrml").lstrip("."), [a.name for a in node.names]))
    return found


def test_mrml_modules_import_one_way_and_no_private_names():
    """Inside ssl3d/mrml/ the modules import siblings, never the package, in one direction, and no private names."""
    folder = ROOT / "ssl3d" / "mrml"
    graph = {}
    for path in sorted(folder.glob("*.py")):
        imports = _sibling_imports(path)
        private = [name for _, names in imports for name in names if name.startswith("_")]
        assert not private, f"{_rel(path)} imports private names {private}"
        if path.stem != "__init__":
            assert all(module for module, _ in imports), f"{_rel(path)} imports the ssl3d.mrml package"
            graph[path.stem] = {module.split(".")[0] for module, _ in imports}
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, f"import cycle in ssl3d/mrml: {' -> '.join(trail + (module,))}"
        if module not in done:
            for sibling in graph.get(module, ()):
                visit(sibling, trail + (module,))
            done.add(module)

    for module in graph:
        visit(module, ())


# ------------------------------------------------------------------------------------------------ .ui
@pytest.fixture(scope="module")
def ui_loader():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtCore = pytest.importorskip("PySide6.QtCore", reason="PySide6 is not installed (pip install PySide6-Essentials)")
    from PySide6 import QtWidgets
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    messages: list[str] = []

    def handler(mode, context, message):
        if not any(harmless in message for harmless in HARMLESS_QT_MESSAGES):
            messages.append(message)

    previous = QtCore.qInstallMessageHandler(handler)
    classes: dict[str, type] = {}

    def standin(name: str) -> type:
        if name not in classes:
            base_name, emits, receives = SLICER_WIDGETS[name]
            base = standin(base_name) if base_name in SLICER_WIDGETS else getattr(QtWidgets, base_name)
            namespace = {}
            if emits:
                namespace["mrmlSceneChanged"] = QtCore.Signal("vtkMRMLScene*")
            if receives:
                def setMRMLScene(self, scene):  # the slot's name is the function's name
                    pass

                namespace["setMRMLScene"] = QtCore.Slot("vtkMRMLScene*")(setMRMLScene)
            classes[name] = type(name, (base,), namespace)
        return classes[name]

    loader = QUiLoader()
    for name in SLICER_WIDGETS:
        loader.registerCustomWidget(standin(name))
    yield loader, messages, QtCore
    QtCore.qInstallMessageHandler(previous)
    del app


@pytest.mark.parametrize("path", _ui_files(), ids=_rel)
def test_ui_loads_without_qt_warnings(ui_loader, path):
    loader, messages, QtCore = ui_loader
    messages.clear()
    handle = QtCore.QFile(str(path))
    assert handle.open(QtCore.QFile.ReadOnly)
    widget = loader.load(handle)
    handle.close()
    assert widget is not None, loader.errorString()
    assert messages == [], f"{_rel(path)}: Qt warnings {messages}"
    names = {child.objectName() for child in widget.findChildren(QtCore.QObject)}
    assert _ui_widget_names(path) <= names | {widget.objectName()}
    widget.deleteLater()


def _ui_widget_names(path: Path) -> set[str]:
    return {w.get("name") for w in ET.parse(path).getroot().iter("widget")}


@pytest.mark.parametrize("path", _ui_files(), ids=_rel)
def test_ui_custom_widgets_and_scene_connections(path):
    root = ET.parse(path).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == path.stem
    declared = {c.findtext("class"): (c.findtext("extends"), c.findtext("header")) for c in root.iter("customwidget")}
    for name, (extends, header) in declared.items():
        assert name in SLICER_WIDGETS, f"unknown custom widget class {name}: add a stand-in to SLICER_WIDGETS"
        assert (extends, header) == (SLICER_WIDGETS[name][0], f"{name}.h"), name
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if c.startswith(("q", "ctk"))} <= set(declared)
    connected = {(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                 for c in root.iter("connection")}
    scene_widgets = {w.get("name") for w in root.iter("widget")
                     if w.get("class") in SLICER_WIDGETS and SLICER_WIDGETS[w.get("class")][2] and w is not top}
    expected = {(top.get("name"), SCENE_SIGNAL, name, SCENE_SLOT) for name in scene_widgets}
    assert expected <= connected, f"MRML widgets without a scene connection: {sorted(expected - connected)}"


def _parameter_fields(source: str) -> set[str]:
    """Field names of the @parameterNodeWrapper classes in a module."""
    fields = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            fields |= {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    return fields


@pytest.mark.parametrize("module", MODULES)
def test_code_and_ui_agree(module):
    source = (ROOT / module / f"{module}.py").read_text(encoding="utf-8")
    ui_path = ROOT / module / "Resources" / "UI" / f"{module}.ui"
    names = _ui_widget_names(ui_path)
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in _files(ROOT / module) if p.suffix == ".py"]  # with its Lib
    used = {node.attr for tree in trees for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert used, f"{module}.py uses no self.ui widgets"
    assert used <= names, f"{module}.py uses widgets missing from {ui_path.name}: {sorted(used - names)}"
    bound = {p.findtext("string") for p in ET.parse(ui_path).getroot().iter("property") if p.get("name") == "SlicerParameterName"}
    fields = _parameter_fields(source)
    assert bound <= fields, f"SlicerParameterName without a parameter node field: {sorted(bound - fields)}"


# ---------------------------------------------------------------------------------------------- CMake
def _cmake_list(text: str, variable: str, module: str) -> set[str]:
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"no set({variable} ...)"
    return {item.replace("${MODULE_NAME}", module) for item in match.group(1).split()}


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_every_file(module):
    folder = ROOT / module
    text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    listed = _cmake_list(text, "MODULE_PYTHON_SCRIPTS", module) | _cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
    present = {p.relative_to(folder).as_posix() for p in _files(folder) if p.name != "CMakeLists.txt"}
    assert listed == present, f"not listed: {sorted(present - listed)}; listed but missing: {sorted(listed - present)}"
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "add_subdirectory(Testing)" in text and (folder / "Testing" / "Python" / "CMakeLists.txt").is_file()
    assert (folder / "Resources" / "Icons" / f"{module}.png").is_file()


def test_extension_cmake_builds_modules_and_ships_the_engine():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^project\(SSL3D\)", text, re.M)
    for module in MODULES:
        assert f"add_subdirectory({module})" in text
    for required in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                     "EXTENSION_SCREENSHOTURLS", "find_package(Slicer REQUIRED)", "${Slicer_EXTENSION_GENERATE_CONFIG}",
                     "${Slicer_EXTENSION_CPACK}", "ctkMacroCompilePythonScript"):
        assert required in text, required
    patterns = []
    for block in re.findall(r"file\(GLOB_RECURSE\s+\w+\s+RELATIVE\s+\S+\s+CONFIGURE_DEPENDS(.*?)\)", text, re.S):
        patterns += block.split()
    assert patterns, "no GLOB_RECURSE for ssl3d/"
    engine = [_rel(p) for p in _files(ROOT / "ssl3d")]
    unmatched = [p for p in engine if not any(fnmatch.fnmatch(p, pattern) for pattern in patterns)]
    assert not unmatched, f"ssl3d files the CMake globs {patterns} do not ship: {unmatched}"


def test_catalog_screenshots_and_icon_exist_in_the_repository():
    """Every EXTENSION_ICONURL / EXTENSION_SCREENSHOTURLS file (raw URLs of this repository's main branch) is a
    PNG in the clone (the screenshots come from ``make screenshots``: Slicer's own slice views)."""
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    urls = re.search(r'set\(EXTENSION_ICONURL "([^"]+)"\)', text).group(1).split()
    urls += re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', text).group(1).split()
    assert len(urls) >= 3
    for url in urls:
        path = ROOT / url.split("/main/", 1)[1]
        assert path.is_file(), f"{url}: {path.relative_to(ROOT)} is not in the repository"
        png = path.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") >= 128, url


def test_catalog_entry_and_license():
    entry = json.loads((ROOT / "SSL3D.json").read_text(encoding="utf-8"))
    required = {"$schema", "category", "scm_url"}
    optional = {"scm_revision", "scm_type", "build_dependencies", "build_subdirectory", "enabled", "tier", "dicom_support_rule"}
    assert required <= set(entry) and set(entry) <= required | optional
    assert entry["scm_url"].startswith("https://github.com/") and entry["category"] == "Segmentation"
    assert entry["tier"] in range(1, 6)
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', (ROOT / "CMakeLists.txt").read_text()).group(1).split()
    assert entry["build_dependencies"] == depends == ["PyTorch"]
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text and len(license_text.splitlines()) > 190
    png = (ROOT / "Resources" / "Icons" / "SSL3D.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (128, 128)


# ------------------------------------------------------------------------------- modules, stand-ins
STANDINS = {
    "slicer/__init__.py": '''
        """Stand-in for Slicer's `slicer` package: just enough for the module files to import."""
        class _App:
            """slicer.app: records signal connections (signal, callable)."""
            def __init__(self):
                self.connections = []
            def connect(self, signal, slot):
                self.connections.append((signal, slot))
        mrmlScene = None
        app = _App()
        def __getattr__(name):
            if name.startswith(("vtk", "q")):
                cls = type(name, (), {})
                globals()[name] = cls
                return cls
            raise AttributeError(name)
    ''',
    "slicer/ScriptedLoadableModule.py": '''
        import unittest
        __all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                   "ScriptedLoadableModuleTest"]
        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent
        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                self.parent = parent
        class ScriptedLoadableModuleLogic:
            def __init__(self, parent=None):
                pass
            def getParameterNode(self):
                return None
        class ScriptedLoadableModuleTest(unittest.TestCase):
            pass
    ''',
    "slicer/util.py": '''
        class VTKObservationMixin:
            def __init__(self):
                self.Observations = []
    ''',
    "slicer/parameterNodeWrapper.py": '''
        WRAPPED = {}
        def parameterNodeWrapper(cls):
            WRAPPED[cls.__name__] = dict(cls.__annotations__)
            return cls
        class _Validator:
            def __init__(self, *args):
                self.args = args
        WithinRange = Minimum = Maximum = Choice = Default = Decimals = SingleStep = _Validator
    ''',
    "slicer/i18n.py": '''
        def tr(text):
            return text
        def translate(context, text):
            return text
    ''',
    "SampleData.py": '''
        """Stand-in for Slicer's SampleData module: records what the modules register (keywords only, as the
        positional order differs between Slicer versions)."""
        REGISTERED = []
        class SampleDataLogic:
            @staticmethod
            def registerCustomSampleDataSource(**kwargs):
                REGISTERED.append(kwargs)
    ''',
    "qt.py": "def __getattr__(name):\n    return type(name, (), {})\n",
    "ctk.py": "def __getattr__(name):\n    return type(name, (), {})\n",
    "vtk.py": "def __getattr__(name):\n    return type(name, (), {})\n",
}

PROBE = '''
import json, sys, types
from pathlib import Path
import SSLPretrain, SSLSegment
from slicer.parameterNodeWrapper import WRAPPED

report = {"heavy": sorted(m for m in %(heavy)r if m in sys.modules), "ssl3d": sorted(m for m in sys.modules if m.startswith("ssl3d")),
          "wrapped": sorted(WRAPPED)}
for module in (SSLPretrain, SSLSegment):
    name = module.__name__
    parent = types.SimpleNamespace()
    getattr(module, name)(parent)
    report[name] = {"title": parent.title, "categories": parent.categories, "dependencies": parent.dependencies,
                    "classes": sorted(c for c in (name + "Widget", name + "Logic", name + "Test") if hasattr(module, c))}
import slicer, SampleData  # Sample Data registration, as on startupCompleted(), with a stand-in cache folder
slicer.mrmlScene = types.SimpleNamespace(GetCacheManager=lambda: types.SimpleNamespace(
    GetRemoteCacheDirectory=lambda: str(Path.cwd() / "cache")))
report["startup"] = [[signal, getattr(slot, "__name__", repr(slot))] for signal, slot in slicer.app.connections]
SSLPretrain.registerSampleData()
report["ssl3d_after_samples"] = sorted(m for m in sys.modules if m.startswith("ssl3d"))
report["samples"] = [{k: (v.__name__ if callable(v) else v) for k, v in entry.items()} for entry in SampleData.REGISTERED]
report["sample_cache"] = str(Path.cwd() / "cache")
report["phantom_files"] = list(SSLPretrain.PHANTOM_FILES)
slicer.mrmlScene = None
report["presets"] = {method: list(names) for method, names in SSLPretrain.PRESETS.items()}
report["paths"] = [str(SSLPretrain.pathOrNone(v)) for v in ("", ".", Path("."), "/data")]
SSLPretrain.SSLPretrainLogic(); SSLSegment.SSLSegmentLogic()

import time  # a real engine job through the logic's JobBoard, drained as the widget's QTimer does
jobs = SSLPretrain.SSLPretrainLogic().jobs
jobs.start("help", ["pretrain", "--help"])
events, finished, deadline = [], None, time.monotonic() + 60
while finished is None and time.monotonic() < deadline:
    time.sleep(0.05)
    events += jobs.take_events("help")
    finished = jobs.finished("help")
report["job"] = {"returncode": finished.returncode if finished else None, "running": jobs.running("help"),
                 "kinds": sorted({e["event"] for e in events}), "text": " ".join(e.get("message", "") for e in events)}

import numpy as np, threading  # the click worker with a stand-in session: arrays in, changed boxes out, in order


class FakeSession:
    made = []

    def __init__(self, bundle, device):
        FakeSession.made.append((bundle, device, threading.current_thread().name))
        self.history, self.last_changed, self.label_name = [], None, "liver"

    def set_volume(self, volume):
        self._mask, self._affine, self.history = np.zeros(volume.shape, np.uint8), volume.ijk_to_ras, []

    @property
    def mask(self):
        return types.SimpleNamespace(array=self._mask, ijk_to_ras=self._affine)

    @property
    def clicks(self):
        return list(self.history)

    def add_point(self, ras, positive=True):
        if ras[0] < 0:
            raise ValueError("outside the volume")
        k = int(ras[0])
        self.history.append(self._mask.copy())
        self._mask[k, 1:3, 1:3] = 1 if positive else 0
        self.last_changed = (k, k + 1, 0, 4, 0, 4)

    def undo(self):
        self._mask[...] = self.history.pop()
        self.last_changed = (0, 4, 0, 4, 0, 4)

    def reset(self):
        self._mask[...] = 0
        self.history, self.last_changed = [], (0, 4, 0, 4, 0, 4)


from ssl3d.infer.click_worker import ClickWorker
worker = ClickWorker(FakeSession)
volume = types.SimpleNamespace(shape=(4, 4, 4), ijk_to_ras=np.eye(4))
worker.submit("restart")  # before any session: nothing happens
worker.submit("point", bundle="b", device="cpu", volume=volume, volumeKey=("v", 1), ras=(1, 0, 0), target="t")
worker.submit("point", bundle="b", device="cpu", volume=None, volumeKey=("v", 1), ras=(2, 0, 0), positive=True, target="t")
worker.submit("point", bundle="b", device="cpu", volume=None, volumeKey=("v", 1), ras=(-1, 0, 0), target="t")
worker.submit("undo", target="t")
worker.submit("point", bundle="b", device="cpu", volume=None, volumeKey=("v", 2), ras=(1, 0, 0), target="t")
worker.submit("reset", target="t")
results, deadline = [], time.monotonic() + 30
while (worker.pending() or len(results) < 6) and time.monotonic() < deadline:
    time.sleep(0.01)
    results += worker.take()
worker.stop()
report["clicks"] = {
    "made": FakeSession.made, "busy": worker.busyFor(),
    "results": [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in r.items() if k not in ("seconds", "ijkToRas")}
                for r in results]}
print(json.dumps(report))
'''


@pytest.fixture(scope="module")
def module_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standins")
    for name, text in STANDINS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *(str(ROOT / m) for m in MODULES), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", PROBE % {"heavy": HEAVY_PACKAGES}],
                            capture_output=True, text=True, env=env, cwd=folder, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_modules_import_with_standins_and_stay_light(module_report):
    assert module_report["heavy"] == [], "importing the modules must not import the engine's heavy dependencies"
    assert module_report["ssl3d"] == [], "the engine is imported on first use, after the dependency check"
    assert module_report["wrapped"] == ["SSLPretrainParameterNode", "SSLSegmentParameterNode"]
    for module in MODULES:
        assert module_report[module]["classes"] == sorted(f"{module}{kind}" for kind in ("Widget", "Logic", "Test"))
        assert module_report[module]["categories"] == ["Segmentation"]
    assert module_report["SSLSegment"]["dependencies"] == ["SSLPretrain"]


#: registerCustomSampleDataSource keywords that both older (loadFileType) and newer Slicer accept.
SAMPLE_DATA_KEYWORDS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                        "thumbnailFileName", "loadFileType", "loadFiles", "loadFileProperties", "checksums"}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_sample_data_registration(module_report):
    assert ["startupCompleted()", "registerSampleData"] in module_report["startup"]
    assert module_report["ssl3d_after_samples"] == [], "registering samples must not import the engine"
    samples = {entry["sampleName"]: entry for entry in module_report["samples"]}
    assert sorted(samples) == ["SSL3DLungCT", "SSL3DPhantom"] and len(module_report["samples"]) == 2
    for name, entry in samples.items():
        assert set(entry) <= SAMPLE_DATA_KEYWORDS, sorted(set(entry) - SAMPLE_DATA_KEYWORDS)
        assert entry["category"] == "SSL3D"
        thumbnail = Path(entry["thumbnailFileName"])
        assert thumbnail.parent == ROOT / "SSLPretrain" / "Resources" / "Icons" and thumbnail.is_file(), thumbnail
        assert all(64 <= side <= 512 for side in _png_size(thumbnail))

    phantoms = pytest.importorskip("ssl3d.data.phantoms")
    phantom = samples["SSL3DPhantom"]
    assert module_report["phantom_files"] == phantom["fileNames"] == list(phantoms.SAMPLE_FILES)
    assert phantom["customDownloader"] == "loadPhantomSample"
    assert phantom["nodeNames"] == ["SSL3D phantom", "SSL3D phantom organs"]
    assert phantom["loadFileType"] == ["VolumeFile", "SegmentationFile"]
    cache = Path(module_report["sample_cache"])
    assert phantom["uris"] == [(cache / name).as_uri() for name in phantoms.SAMPLE_FILES]  # files the loader writes

    lung = samples["SSL3DLungCT"]
    assert lung["uris"].startswith("https://raw.githubusercontent.com/AIM-Harvard/pyradiomics/")
    assert lung["uris"].endswith("/data/lung1_image.nrrd") and "customDownloader" not in lung
    assert lung["nodeNames"] == "SSL3D lung CT" and lung["loadFileType"] == "VolumeFile"
    assert re.fullmatch(r"SHA256:[0-9a-f]{64}", lung["checksums"])
    samples_module = pytest.importorskip("ssl3d.data.samples")
    cached = samples_module.cache_dir() / "samples" / "lung1_image.nrrd"
    if cached.is_file():  # the sdist's file (checked against the archive's SHA-256 when it was fetched)
        assert lung["checksums"] == "SHA256:" + hashlib.sha256(cached.read_bytes()).hexdigest()


def test_module_parameter_paths(module_report):  # the command lines and bundle texts: Testing/test_commands.py
    assert module_report["paths"] == ["None", "None", "None", "/data"]


def _ssl3d_names(path: Path) -> set[str]:
    """Dotted ``ssl3d.x.y`` names a module file uses, through ``import``/``from`` aliases anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases, names = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ssl3d":
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or "ssl3d"
                    names.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ssl3d":
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                names.add(f"{node.module}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in aliases:
                names.add(".".join([aliases[inner.id], *chain]))
    return names


def _resolve(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


@pytest.mark.parametrize("module", MODULES)
def test_engine_names_used_by_modules_exist(module):
    names = set().union(*(_ssl3d_names(p) for p in _files(ROOT / module) if p.suffix == ".py"))
    assert names, f"{module}.py uses no ssl3d names"
    if any(n.startswith("ssl3d.mrml") for n in names):
        pytest.importorskip("slicer.util", reason="ssl3d.mrml needs slicer-core")
    missing = sorted(n for n in names if not _resolve(n))
    assert not missing, f"{module}.py uses ssl3d names that do not exist: {missing}"


def test_engine_jobs_drain_events_until_finished(module_report):
    job = module_report["job"]
    assert job["returncode"] == 0 and not job["running"]
    assert job["kinds"] == ["log"] and "--method" in job["text"]  # argparse's help text, as log events


def test_module_preset_choices_match_the_registry(module_report):
    config = pytest.importorskip("ssl3d.config")
    for method, names in module_report["presets"].items():
        assert sorted(names) == sorted(config.preset_names(method)), method


def test_click_worker_runs_sessions_off_the_main_thread(module_report):
    clicks = module_report["clicks"]
    assert clicks["made"] == [["b", "cpu", "SSLSegment clicks"]]  # one warm session, made in the worker thread
    assert clicks["busy"] is None
    first, second, failed, undo, stale, reset = clicks["results"]
    assert first["kind"] == "point" and first["box"] == [1, 2, 0, 4, 0, 4] and first["clicks"] == 1
    assert first["values"] == [[[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]]
    assert first["changed"] == first["values"] and first["target"] == "t" and first["label"] == "liver"
    assert second["box"] == [2, 3, 0, 4, 0, 4] and second["clicks"] == 2
    assert failed["error"] == "outside the volume" and failed["kind"] == "point"
    assert undo["kind"] == "undo" and undo["clicks"] == 1
    changed = [[[bool(v) for v in row] for row in plane] for plane in undo["changed"]]
    assert [plane == [[False] * 4] * 4 for plane in changed] == [True, True, False, True]  # only the undone click's voxels
    assert "error" in stale  # a new volume key without a volume: the main thread sends the volume again
    assert reset["kind"] == "reset" and reset["clicks"] == 0 and not any(v for p in reset["values"] for r in p for v in r)
