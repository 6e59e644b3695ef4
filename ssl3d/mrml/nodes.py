"""Shared MRML helpers: 4x4 matrices between numpy and VTK, world transforms, node lookup by name.

The leaf of :mod:`ssl3d.mrml`: every other module of the package imports it, it imports none of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import vtk

from ..errors import InputError

__all__ = ["to_numpy", "to_vtk", "to_world", "find_node", "named_node", "remove_node", "describe_node"]


def to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def to_vtk(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def to_world(node: Any) -> np.ndarray:
    """4x4 matrix from the node's local coordinates to world RAS (identity without a parent transform).

    Raises:
        InputError: the node lies under a non-linear (warping) transform.
    """
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(
            f"'{node.GetName()}' is under the non-linear transform '{transform.GetName()}'; harden the transform "
            "(Data module: right-click the node, Harden transform) or remove it, then try again.")
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return to_numpy(matrix)


def find_node(scene: Any, class_name: str, name: str) -> Any:
    for index in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(index, class_name)
        if node.GetName() == name and node.GetClassName() == class_name:
            return node
    return None


def named_node(scene: Any, class_name: str, name: str) -> Any:
    found = find_node(scene, class_name, name)
    return found if found is not None else scene.AddNewNodeByClass(class_name, name)


def remove_node(scene: Any, node: Any) -> None:
    display = node.GetDisplayNode() if hasattr(node, "GetDisplayNode") else None
    if display is not None:
        scene.RemoveNode(display)
    scene.RemoveNode(node)


def describe_node(node: Any) -> str:
    if node is None:
        return "nothing"
    return f"'{node.GetName()}' ({node.GetClassName()})" if hasattr(node, "GetClassName") else repr(node)
