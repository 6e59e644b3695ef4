"""``import-weights --format mis-fm``: a released MIS-FM PCT-Net checkpoint (PyMIC) as a VF pretext bundle.

PCT-Net's constructor arguments are read from tensor shapes where they tell, the resolution mode is
inferred from BatchNorm statistics, and the rest is taken from the preset and recorded as assumed.

Example::

    report = import_misfm_weights("pctnet_ct10k_volf.pt", "vf-v2", "misfm_bundle")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import Tensor

from ..config import Preset, apply_overrides, get_preset, preset_names, to_dict
from ..errors import ConfigError, WeightsError
from ..pretext.vf_bundle import fusion_bundle_meta
from ..pretext.vf_task import network_spec
from .checkpoint import read_checkpoint, unwrap_state
from .imported_bundle import check_out_dir, write_imported_bundle
from .keymap import MatchReport, match_state, misfm_keys

__all__ = ["import_misfm_weights"]

_PCTNET_DEFAULTS = {"in_chns": 1, "class_num": 5, "feature_chns": [24, 48, 128, 256, 512], "dropout": [0.0, 0.0, 0.2, 0.2, 0.2],
                    "depths": [2, 2, 2], "num_heads": [4, 8, 16], "window_sizes": [6, 6, 6], "resolution_mode": 1, "multiscale_pred": False}
_MISFM_SOURCE = "openmedlab/MIS-FM release (PCT-Net, PyMIC checkpoint)"
_LEVELS = ("e2", "e3", "e4")


def _shape(state: Mapping[str, Tensor], key: str) -> list[int] | None:
    return list(state[key].shape) if key in state else None


def _first(state: Mapping[str, Tensor], keys: Sequence[str], axis: int) -> tuple[int, str] | None:
    """(size along ``axis``, key) of the first key present."""
    for key in keys:
        if key in state and state[key].dim() > axis:
            return int(state[key].shape[axis]), key
    return None


def _class_num(state: Mapping[str, Tensor], source: str) -> tuple[int, str] | None:
    keys = [f"pred_heads.{m}.out_conv{j}.conv.2.weight" for m in range(3) for j in range(2)]
    keys += ["pyramid_ct.out_conv2.conv.2.weight", "pyramid_ct.out_conv3.conv.2.weight"]
    found = {k: int(state[k].shape[0]) for k in keys if k in state and state[k].dim() == 5}
    if len(set(found.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in found.items())
        raise WeightsError(f"{source}: the output heads disagree on the class count ({shown}).")
    return (next(iter(found.values())), "out conv shapes (" + ", ".join(found) + ")") if found else None


def _window(rows: int, key: str, source: str) -> int:
    side = round(rows ** (1 / 3))
    if side ** 3 != rows or side % 2 == 0:
        raise WeightsError(f"{source}: {key} has {rows} rows, not (2w-1)^3 for a window w.")
    return (side + 1) // 2


def _level_args(state: Mapping[str, Tensor], source: str) -> dict[str, tuple[list[int], str]]:
    """depths, num_heads, window_sizes of levels 2-4 from the transformer blocks of e2, e3, e4."""
    depths, heads, windows = [], [], []
    for level in _LEVELS:
        prefix = f"pyramid_ct.convtrans_{level}.trans.blocks."
        blocks = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
        table = f"{prefix}0.attn.relative_position_bias_table"
        if not blocks or table not in state or state[table].dim() != 2:
            return {}
        depths.append(max(blocks) + 1)
        heads.append(int(state[table].shape[1]))
        windows.append(_window(int(state[table].shape[0]), table, source))
    where = "pyramid_ct.convtrans_{e2,e3,e4}.trans.blocks"
    return {"depths": (depths, f"{where}.N count"), "num_heads": (heads, f"{where}.0.attn.relative_position_bias_table columns"),
            "window_sizes": (windows, f"{where}.0.attn.relative_position_bias_table rows = (2w-1)^3 (the effective window)")}


def _shape_args(state: Mapping[str, Tensor], source: str) -> dict[str, tuple[Any, str]]:
    """PCT-Net constructor arguments the tensor shapes tell, each with the key it was read from."""
    emb = next((m for m in range(3) if f"embeddings.{m}.proj.weight" in state), None)
    if emb is None:
        shown = ", ".join(list(state)[:5])
        raise WeightsError(f"{source}: not a PCT-Net checkpoint (no 'embeddings.N.proj.weight'; keys begin {shown}).")
    read: dict[str, tuple[Any, str]] = {}
    proj = f"embeddings.{emb}.proj.weight"
    read["in_chns"] = (int(state[proj].shape[1]), f"{proj} {_shape(state, proj)}")
    chns = [_first(state, [proj], 0), _first(state, [f"embeddings.{m}.down1.conv.2.weight" for m in range(3)], 0),
            _first(state, [f"embeddings.{m}.down2.conv.2.weight" for m in range(3)], 0),
            _first(state, ["pyramid_ct.down3.conv.2.weight"], 0), _first(state, ["pyramid_ct.down4.conv.2.weight"], 0)]
    if all(chns):
        read["feature_chns"] = ([c[0] for c in chns], "output channels of " + ", ".join(c[1] for c in chns))  # type: ignore[index]
    classes = _class_num(state, source)
    if classes:
        read["class_num"] = classes
    read.update(_level_args(state, source))
    return read


def _trained_modes(state: Mapping[str, Tensor]) -> list[int]:
    """Resolution modes whose patch embedding has BatchNorm statistics (num_batches_tracked > 0)."""
    modes = []
    for m in range(3):
        counts = [int(v) for k, v in state.items() if k.startswith(f"embeddings.{m}.") and k.endswith("num_batches_tracked")]
        if counts and max(counts) > 0:
            modes.append(m)
    return modes


def _pctnet_args(state: Mapping[str, Tensor], preset: Preset, source: str) -> tuple[dict, dict, dict, dict]:
    """(constructor args, read from tensor shapes, inferred from statistics, assumed) for the PCT-Net
    of a MIS-FM checkpoint."""
    read = {k: {"value": v, "from": w} for k, (v, w) in _shape_args(state, source).items()}
    given = preset.network.kwargs if preset.network.name == "pctnet" else {}
    given = {"multiscale_pred": preset.fusion.deep_supervision != "off", **given}  # outputs follow the preset's loss
    assumed: dict[str, dict] = {}
    args = {}
    for name, default in _PCTNET_DEFAULTS.items():
        if name in read:
            args[name] = read[name]["value"]
            continue
        args[name] = given.get(name, default)
        why = f"preset {preset.name}" if name in given else "the MIS-FM demo config"
        assumed[name] = {"value": args[name], "from": f"{why}; the file does not tell"}
    inferred: dict[str, dict] = {}
    modes = _trained_modes(state)
    if len(modes) == 1:  # a heuristic, not a stored setting: kept apart from what the shapes say
        args["resolution_mode"] = modes[0]
        inferred["resolution_mode"] = {"value": modes[0], "from": (
            f"BatchNorm statistics: only embeddings.{modes[0]} has num_batches_tracked > 0; the file does not store the mode")}
        assumed.pop("resolution_mode")
    args["input_size"] = list(preset.fusion.patch)
    assumed["input_size"] = {"value": args["input_size"], "from": f"fusion.patch of preset {preset.name} (the MIS-FM demo size); the file does not tell"}
    assumed["preprocessing"] = {"value": to_dict(preset.preprocess), "from": f"preset {preset.name}; the preprocessing of the released weights is undocumented"}
    return args, read, inferred, assumed


def _iteration(checkpoint: Any) -> int | None:
    """The PyMIC checkpoint's ``iteration`` entry, when the file has one (a bare state dict has none)."""
    from numbers import Integral

    value = checkpoint.get("iteration") if isinstance(checkpoint, Mapping) else None
    return int(value) if isinstance(value, Integral) and not isinstance(value, bool) else None


def _pctnet_preset(name: str) -> Preset:
    """The preset MIS-FM weights are imported under: a VF preset whose network is PCT-Net (vf-v1, vf-v2).

    Raises:
        ConfigError: unknown preset, or one that is not VF or does not use PCT-Net (e.g. vf-v1-cpu).
    """
    preset = get_preset(name)
    allowed = [n for n in preset_names("vf") if get_preset(n).network.name == "pctnet"]
    if preset.method != "vf" or preset.network.name != "pctnet":
        what = f"a {preset.method!r} preset" if preset.method != "vf" else f"a VF preset on {preset.network.name}"
        raise ConfigError(f"--preset {preset.name} is {what}; MIS-FM PCT-Net weights need a PCT-Net preset: {', '.join(allowed)}.")
    return preset


def import_misfm_weights(path: str | Path, preset_name: str = "vf-v1", out_dir: str | Path = "misfm_bundle",
                         allow_partial: bool = False) -> MatchReport:
    """Turn a released MIS-FM PCT-Net checkpoint into a VF pretext bundle.

    The file (a PyMIC checkpoint dict with ``model_state_dict``, or a bare state dict, optionally with
    DataParallel ``module.`` prefixes) is read with ``torch.load(weights_only=True)``. PCT-Net's
    arguments are read from tensor shapes where they tell (in_chns, class_num from the out convs,
    feature_chns, depths, num_heads, effective window sizes; ``provenance.read_from_file``); the
    resolution mode is inferred from which patch embedding has BatchNorm statistics
    (``provenance.inferred``); the rest (input size, preprocessing, dropout, and the mode when the
    statistics do not tell) come from the preset and are recorded under ``provenance.assumed``.

    Args:
        path: the checkpoint file.
        preset_name: a VF preset on PCT-Net, vf-v1 or vf-v2 (network kwargs, input size, preprocessing,
            fusion settings); the ``*-cpu`` presets (small UNet, 16x32x32) are refused.
        out_dir: bundle folder to write (replaced when it exists).
        allow_partial: accept a file that fills only part of the network (missing tensors keep their
            initial values and are listed in ``provenance.match``).

    Returns:
        The :class:`~ssl3d.weights.MatchReport` (matched, missing, unexpected, dropped keys).

    Raises:
        WeightsError: unreadable file, not a PCT-Net, heads that disagree, any shape mismatch, or a
            partial match without ``allow_partial``; nothing is written then.
        ConfigError: unknown preset, or one that is not VF on PCT-Net.
    """
    from ..nets.builders import build_network

    path, out_dir = Path(path), Path(out_dir)
    preset = _pctnet_preset(preset_name)
    check_out_dir(out_dir)
    checkpoint = read_checkpoint(path)
    foreign = unwrap_state(checkpoint, path)
    renamed = {misfm_keys(k) or k: v for k, v in foreign.items()}
    args, read, inferred, assumed = _pctnet_args(renamed, preset, path.name)
    kwargs = {"in_channels": args.pop("in_chns"), "out_channels": args.pop("class_num"), **args}
    try:
        network = build_network("pctnet", **kwargs)
    except ConfigError as exc:
        raise WeightsError(f"{path}: the PCT-Net read from the file cannot be built ({exc})") from None
    state, report = match_state(network.state_dict(), foreign, misfm_keys, allow_partial, source=str(path))
    network.load_state_dict(state, strict=False)
    preset = apply_overrides(preset, {"network.name": "pctnet", "network.kwargs": {k: v for k, v in kwargs.items() if k not in ("in_channels", "out_channels")}})
    network_spec(preset)  # the resolved preset must be trainable as it stands
    provenance = {
        "data": "pretraining data of the release (not in the file)", "steps": _iteration(checkpoint), "origin": _MISFM_SOURCE,
        "licence": "not stated in the file; see the MIS-FM repository (openmedlab/MIS-FM)",
        "read_from_file": read, "inferred": inferred, "assumed": assumed,
    }
    write_imported_bundle(out_dir, network.state_dict(), fusion_bundle_meta(preset, "pctnet", kwargs, provenance, {}), path, "mis-fm", report)
    return report
