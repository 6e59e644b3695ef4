"""The bookkeeping of click-to-segment on the scene's side: which structure the clicks refine, whether the
click session holds the volume, and which point each click placed (for Undo).

The click server computes; this records what the module must know between clicks, so a new model, volume or
segment starts a new structure, the volume crosses to the server once, and Undo removes the right point.

Example::

    book = ClickBook()
    if book.aim((bundle, device, volume.GetID(), segmentation.GetID(), segment)):   # a new structure
        clear_click_points(scene, keep=point_list)                                     # only this click stays
    sent, key = book.volume_to_send(volume)          # the Volume on the first click, None after
    tag = book.record(point_list.GetID())            # the click's number, sent with it
"""

from __future__ import annotations

from typing import Any, Optional

from ..io import Volume
from .markups import point_list_node
from .volumes import volume_from_node

__all__ = ["ClickBook", "clear_click_points"]

#: (bundle, device, volume node ID, segmentation node ID, segment ID): what a click refines.
Target = tuple


class ClickBook:
    """What the clicks of the current structure are, as the module keeps them between clicks.

    Attributes:
        target: the :data:`Target` of the clicks, None before the first one (or after a change elsewhere).
        volume_key: (volume node ID, image MTime) of the volume the click session holds, None when it must be sent.
        points: (click number, point list ID) of the clicks that can be undone, oldest first.
    """

    def __init__(self) -> None:
        self.target: Optional[Target] = None
        self.volume_key: Optional[tuple] = None
        self.points: list[tuple[int, str]] = []
        self._count = 0  # numbers the clicks, so a failed one is found among those queued

    def forget(self) -> None:
        """Start over: the session lost its volume and clicks (a closed scene, another server)."""
        self.target, self.volume_key, self.points = None, None, []

    def aim(self, target: Target) -> bool:
        """Point the clicks at ``target``; True when it is a new structure (the session forgets its clicks and
        the points of the last structure go; the segment keeps what earlier clicks wrote)."""
        if target == self.target:
            return False
        if self.target is None or tuple(target[:2]) != tuple(self.target[:2]):
            self.volume_key = None  # another model or device: a new session needs the volume
        self.target, self.points = target, []
        return True

    def release(self) -> bool:
        """The selected segment changed elsewhere: the next click starts a new structure. True when clicks were aimed."""
        if self.target is None:
            return False
        self.target, self.points = None, []
        return True

    def volume_to_send(self, volume_node: Any) -> tuple[Optional[Volume], tuple]:
        """(the Volume to send, or None when the session holds it; its key). Once per volume, and no copy:
        the request body is a view of the node's voxels (valid while the node's image lives)."""
        key = (volume_node.GetID(), volume_node.GetImageData().GetMTime())
        if key == self.volume_key:
            return None, key
        self.volume_key = key
        return volume_from_node(volume_node, copy=False), key

    def record(self, point_list_id: str) -> int:
        """Note a click placed in the point list ``point_list_id``; returns its number (the request's tag)."""
        self._count += 1
        self.points.append((self._count, point_list_id))
        return self._count

    def failed(self, tag: Any, volume_lost: bool = False) -> None:
        """The click ``tag`` changed nothing (it has no step to undo); ``volume_lost``: send the volume again."""
        self.points = [entry for entry in self.points if entry[0] != tag]
        if volume_lost:
            self.volume_key = None

    def undo_point(self, scene: Any) -> bool:
        """Remove the last click's point from its list; False when there is no click to undo."""
        if not self.points or self.target is None:
            return False
        node = scene.GetNodeByID(self.points.pop()[1])
        if node is not None and node.GetNumberOfControlPoints():
            node.RemoveNthControlPoint(node.GetNumberOfControlPoints() - 1)
        return True


def clear_click_points(scene: Any, keep: Any = None) -> None:
    """Remove the include and exclude click points, all but the last point of ``keep`` (one of the two lists)."""
    for kind in ("positive", "negative"):
        node = point_list_node(scene, kind)
        if node is not keep:
            node.RemoveAllControlPoints()
            continue
        for index in range(node.GetNumberOfControlPoints() - 2, -1, -1):
            node.RemoveNthControlPoint(index)
