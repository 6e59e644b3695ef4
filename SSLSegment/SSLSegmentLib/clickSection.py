"""The click-to-segment section of SSLSegment's widget: point lists, the click server, the Segment Editor's segment.

A mixin of ``SSLSegmentWidget``: it uses the widget's ``ui``, ``logic``, ``timer``, parameter node and bundle
info, and keeps the click state in ``_clicker`` (the click worker) and ``_clicks`` (``ssl3d.mrml.ClickBook``).
"""

import sys

import qt
import slicer
from slicer.i18n import tr as _
from SSLPretrainLib.engineSetup import ensureEngineRequirements, pythonSlicer
from SSLPretrainLib.widgets import pathOrNone

CLICK_SERVER_SETTING = "SSL3D/SSLSegment/clickServer"  # the Server field (empty: a local click server)
BUSY_AFTER_S = 0.5  # the busy indicator shows only for clicks slower than this


def clickStatus(info: dict) -> str:
    """What to do next in the click section, for the chosen bundle."""
    from ssl3d import bundle_info

    if not bundle_info.takes_clicks(info):
        return _("Choose a click-to-segment or segmentation bundle above.")
    return _("Place include (green) and exclude (red) points on the volume; each click refines the selected "
             "segment. Paint or erase with the Segment Editor between clicks: clicks change only the voxels "
             "they predict differently.")


class ClickSection:
    """Slots and helpers of the "Click to segment" section (the widget connects them in ``setup``)."""

    def onClickSectionToggled(self, collapsed: bool) -> None:
        """Prepare the include (green) and exclude (red) point lists when the section opens."""
        self._updateShortcuts(not collapsed)
        if collapsed:
            self._leavePlaceMode()
            return
        for kind, placeWidget in (("positive", self.ui.positivePlaceWidget), ("negative", self.ui.negativePlaceWidget)):
            node = self.logic.pointList(kind)
            placeWidget.setCurrentNode(node)
            if not self.hasObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onPointPlaced):
                self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onPointPlaced)
                self._observedPointLists.append(node)
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        if segmentation is not None and self.ui.segmentEditorWidget.segmentationNode() is None:
            self.ui.segmentEditorWidget.setSegmentationNode(segmentation)
        self.ui.clickStatusLabel.text = clickStatus(self._bundleInfo)
        self._warmClickServer()

    def _warmClickServer(self, bundle=None) -> None:
        """Start the click server and load the model while the user finds the structure (the first click is then
        one prediction); only when the engine is installed: opening a section must not ask to install."""
        from ssl3d import bundle_info, requirements

        p = self._parameterNode
        bundle = bundle or (pathOrNone(p.modelPath) if p else None)
        if p is None or bundle is None or not bundle_info.takes_clicks(self._bundleInfo):
            return
        if requirements.missing():
            return
        self._clicker.submit("warm", bundle=str(bundle), device=p.device.value)
        self.timer.start()

    def _newClickWorker(self):
        """The click worker of the Server field: a local click server (empty field), or a remote one (URL + token)."""
        from ssl3d.serve.client import ServerClickWorker  # standard library and numpy: no torch in Slicer's process

        url = self.ui.clickServerLineEdit.text.strip()
        return ServerClickWorker(python=pythonSlicer() or sys.executable, url=url or None,
                                 token=self.ui.clickTokenLineEdit.text.strip() or None)

    def onClickServerChanged(self) -> None:
        """Another server: the next click opens a new session there (the segment keeps what was written)."""
        url = self.ui.clickServerLineEdit.text.strip()
        with slicer.util.tryWithErrorDisplay(_("The click server cannot be used."), waitCursor=False):
            if url and not self.ui.clickTokenLineEdit.text.strip():
                self.ui.clickStatusLabel.text = _("Enter the server's token.")
                return
            worker = self._newClickWorker()
            self._clicker.stop()
            self._clicker = worker
            self._clicks.forget()
            qt.QSettings().setValue(CLICK_SERVER_SETTING, url)

    def _leavePlaceMode(self) -> None:
        for placeWidget in (self.ui.positivePlaceWidget, self.ui.negativePlaceWidget):
            if placeWidget.currentNode() is not None and placeWidget.placeModeEnabled:
                placeWidget.setPlaceModeEnabled(False)

    def _updateShortcuts(self, enabled: bool) -> None:
        for shortcut in self._shortcuts:
            shortcut.enabled = enabled

    def onToggleClickKind(self) -> None:
        """T: place exclude points after include points, and the other way round."""
        positive, negative = self.ui.positivePlaceWidget, self.ui.negativePlaceWidget
        (negative if positive.placeModeEnabled else positive).setPlaceModeEnabled(True)

    def onNextSegment(self) -> None:
        """N: a new empty segment to click on (the clicks of the last one stay in it)."""
        editor = self.ui.segmentEditorWidget
        segmentationNode = editor.segmentationNode()
        if segmentationNode is not None:
            editor.setCurrentSegmentID(segmentationNode.GetSegmentation().AddEmptySegment("", _("Clicked structure")))

    def onPointPlaced(self, caller=None, event=None) -> None:
        """A placed include/exclude point refines the selected segment (through the click server)."""
        from ssl3d import bundle_info, mrml

        with slicer.util.tryWithErrorDisplay(_("The point cannot be used."), waitCursor=False):
            point = mrml.ras_point_from_markup(caller)
            positive = caller.GetID() == self.logic.pointList("positive").GetID()
            p = self._parameterNode
            bundle = pathOrNone(p.modelPath) if p else None
            volumeNode = p.inputVolume if p else None
            segmentationNode, segmentId = self._targetSegment(volumeNode)
            if not bundle_info.takes_clicks(self._bundleInfo) or bundle is None:
                raise ValueError(clickStatus(self._bundleInfo))
            if volumeNode is None or segmentationNode is None or not segmentId:
                raise ValueError(_("Choose a volume above and the segment to refine."))
            if not ensureEngineRequirements():
                return
            target = (str(bundle), p.device.value, volumeNode.GetID(), segmentationNode.GetID(), segmentId)
            if self._clicks.aim(target):  # another model, volume or segment: a new structure
                self._clicker.submit("restart")
                mrml.clear_click_points(slicer.mrmlScene, keep=caller)
            volume, volumeKey = self._clicks.volume_to_send(volumeNode)
            tag = self._clicks.record(caller.GetID())
            self._clicker.submit("point", bundle=target[0], device=target[1], volume=volume, volumeKey=volumeKey,
                                 ras=tuple(float(v) for v in point), positive=positive, target=target, tag=tag)
            kind = _("Include") if positive else _("Exclude")
            self.ui.clickStatusLabel.text = _("{kind} point at {ras} (R,A,S mm)...").format(kind=kind, ras=mrml.format_ras(point))
            self.timer.start()

    def _targetSegment(self, volumeNode):
        """The selected segmentation node and segment; a new segmentation and segment are made when none is chosen."""
        self._choosingTarget = True  # selecting a new segment here must not clear the click being placed
        try:
            return self._chooseTargetSegment(volumeNode)
        finally:
            self._choosingTarget = False

    def _chooseTargetSegment(self, volumeNode):
        editor = self.ui.segmentEditorWidget
        segmentationNode = editor.segmentationNode()
        segmentId = editor.currentSegmentID() if segmentationNode is not None else ""
        if segmentationNode is None and volumeNode is not None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volumeNode.GetName()} clicks")
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            editor.setSegmentationNode(segmentationNode)
            editor.setSourceVolumeNode(volumeNode)
        if segmentationNode is not None and not segmentId:
            segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", _("Clicked structure"))
            editor.setCurrentSegmentID(segmentId)
        return segmentationNode, segmentId

    def onTargetSegmentChanged(self, selection=None) -> None:
        """Another segment or segmentation selected in the Segment Editor: the next click starts a new structure
        (the points of the last one are cleared)."""
        if not self._choosingTarget and self._clicks.release():
            self._clicker.submit("restart")
            from ssl3d import mrml

            mrml.clear_click_points(slicer.mrmlScene)
            self.ui.undoClickButton.enabled = False

    def onUndoClick(self) -> None:
        """Take back the last click: its point goes and the segment gets back the voxels the click changed."""
        if not self._clicks.undo_point(slicer.mrmlScene):
            return
        self._clicker.submit("undo", target=self._clicks.target)
        self.ui.undoClickButton.enabled = bool(self._clicks.points)
        self.timer.start()

    def onResetClicks(self) -> None:
        """Remove all points and what the clicks wrote into the segment (voxels painted since are kept)."""
        from ssl3d import mrml

        mrml.clear_click_points(slicer.mrmlScene)
        self._clicks.points = []
        self.ui.undoClickButton.enabled = False
        if self._clicks.target is not None:
            self._clicker.submit("reset", target=self._clicks.target)
            self.timer.start()
        self.ui.clickStatusLabel.text = ""

    def _showClickResults(self) -> None:
        """Write the worker's results into their segments (main thread), and show the busy indicator."""
        from ssl3d import mrml

        for result in self._clicker.take():
            if result.get("error"):
                self.ui.clickStatusLabel.text = _("Click failed: {message}").format(message=result["error"])
                if result["kind"] == "point":  # no step to undo (later queued clicks may have succeeded)
                    self._clicks.failed(result.get("tag"), volume_lost=True)  # the next click sends the volume
                continue
            target = result.get("target")
            if target is None or result.get("box") is None:
                continue
            segmentationNode = slicer.mrmlScene.GetNodeByID(target[3])
            if segmentationNode is None or segmentationNode.GetSegmentation().GetSegment(target[4]) is None:
                continue  # removed meanwhile
            try:  # one failed write must not drop the results after it (tryWithErrorDisplay raises again)
                with slicer.util.tryWithErrorDisplay(_("Failed to update the segment."), waitCursor=False):
                    editor = self.ui.segmentEditorWidget
                    if editor.segmentationNode() is segmentationNode:
                        editor.saveStateForUndo()  # each click is one step of the Segment Editor's Undo too
                    mrml.write_mask_region(segmentationNode, target[4], result["ijkToRas"], result["box"],
                                           result["values"], result["changed"])
            except Exception:
                if result["kind"] == "point":  # nothing was written: that click has no step to undo
                    self._clicks.failed(result.get("tag"))
                continue
            label = f" ({result['label']})" if result.get("label") else ""
            self.ui.clickStatusLabel.text = _("{count} click(s){label}, {seconds:.2f} s.").format(
                count=result.get("clicks", 0), label=label, seconds=result.get("seconds", 0.0))
            if result.get("note"):  # where the model runs, when not where it was asked to
                self.ui.clickStatusLabel.text += " " + result["note"]
        self.ui.undoClickButton.enabled = bool(self._clicks.points)
        busy = self._clicker.busyFor()
        self.ui.clickBusyProgressBar.visible = busy is not None and busy > BUSY_AFTER_S
        status = getattr(self._clicker, "status", "")
        if status:  # "starting the click server" (the first click), "loading the model"
            self.ui.clickStatusLabel.text = status[:1].upper() + status[1:] + "..."
