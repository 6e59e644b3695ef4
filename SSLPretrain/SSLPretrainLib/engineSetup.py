"""The engine as Slicer's process sees it: a supported Slicer, the packages it needs (asked for and installed
once), the Python launcher its jobs run with, and jobs that outlive a module reload."""

import json
import logging
import shutil
import sys
from typing import Optional

import qt
import slicer
from slicer.i18n import tr as _


def showUnsupportedSlicer(layout, uiWidget) -> bool:
    """On a Slicer older than SSL3D supports: one message above the module's widgets, which are disabled.

    Checked before anything else of the engine is imported (on Slicer 5.8's Python 3.9 it could not be).
    """
    from ssl3d.slicer_support import unsupported

    message = unsupported(slicer.app.applicationVersion, sys.version_info)
    if message is None:
        return False
    label = qt.QLabel(message)
    label.wordWrap = True
    label.objectName = "unsupportedSlicerLabel"
    layout.insertWidget(0, label)
    uiWidget.enabled = False
    return True


def pythonSlicer() -> Optional[str]:
    """PythonSlicer, Slicer's Python launcher (on Slicer's PATH; Slicer also sets sys.executable to it), runs engine
    jobs with Slicer's Python. It starts python-real as a child and forwards no signals: jobs cancel the whole tree."""
    return shutil.which("PythonSlicer")


def ensureEngineRequirements() -> bool:
    """Before a job: what the engine still needs (checked once per session), asked for and installed.

    torch comes from the PyTorch extension (the build for this computer's GPU), the rest from pip with their
    dependencies, around Slicer's torch and SimpleITK. Under ``Slicer --testing`` nothing is asked or installed.
    """
    from ssl3d import requirements

    def confirm(text):
        return slicer.util.confirmOkCancelDisplay(
            _("SSL3D needs these Python packages, which are not installed yet. Install them now? "
              "This can take several minutes."), detailedText=text)

    def installTorch(requirement):
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(_("Install the PyTorch extension from the Extensions Manager, then restart Slicer.")) from None
        PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=requirement.specifier)

    outcome = requirements.ensure(confirm, installTorch, slicer.util.pip_install, testing=slicer.app.testingEnabled())
    if outcome.testing:
        logging.info(requirements.skip_reason() or "")
        return False
    if outcome.restart and slicer.util.confirmYesNoDisplay(_("Restart Slicer now to use the updated packages?")):
        slicer.util.restart()
    if not outcome.ready and not outcome.declined and not outcome.restart:
        slicer.util.errorDisplay(_("Still missing: {names}").format(names=requirements.describe(outcome.missing)))
    return outcome.ready


def keepJobs(board, setting: str) -> None:
    """Forget the module's jobs without stopping them, remembering their run folders (a module reload)."""
    qt.QSettings().setValue(setting, json.dumps(board.detach_all()))


def reattachJobs(board, setting: str) -> dict:
    """Follow again the runs that :func:`keepJobs` remembered and that still live; role -> job."""
    try:
        kept = json.loads(str(qt.QSettings().value(setting, "") or "{}"))
    except ValueError:
        kept = {}
    qt.QSettings().remove(setting)
    return board.reattach(kept) if isinstance(kept, dict) else {}

