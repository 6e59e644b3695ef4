"""Volume Fusion bundles: what a VF pretext bundle holds, loading one, its fusion accuracy, the import of
released MIS-FM PCT-Net checkpoints, and the demo stage.

A VF pretext bundle (``task: pretext``, ``pretext.method: vf``) holds the whole network with its
fusion head (``classes`` outputs, 5 for K = 4), the preset it was trained with (its ``fusion`` section
generates samples again) and the preprocessing. Labels 1..K name the fusion classes ("alpha 1/4", ...).

Example::

    model = load_vf_bundle("run/bundle", "cpu")
    x, label = fused_set(volumes, model.fusion, 8, seed=0)     # ssl3d.pretext.vf_task
    logits = model.logits(x)                                    # (8, 5, D, H, W)
    fusion_accuracy(model, volumes, n=8, seed=0)["balanced_accuracy"]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..bundle import Bundle, as_bundle, write_bundle
from ..config import Preset, apply_overrides, from_dict, get_preset, preset_names, to_dict
from ..errors import BundleError, ConfigError, InputError, WeightsError
from ..weights import MatchReport, match_state, misfm_keys, read_checkpoint, unwrap_state
from .vf_task import class_names, fused_set, fusion_metrics, network_spec, pad_volumes, percentile_method, predict_logits

__all__ = ["VFModel", "fusion_bundle_meta", "load_vf_bundle", "fusion_accuracy", "import_misfm_weights", "demo_stage"]

# viridis samples for alpha 1/4 .. 1 (alpha 0, the background, has no label entry)
_COLORS = [(59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
_PCTNET_DEFAULTS = {"in_chns": 1, "class_num": 5, "feature_chns": [24, 48, 128, 256, 512], "dropout": [0.0, 0.0, 0.2, 0.2, 0.2],
                    "depths": [2, 2, 2], "num_heads": [4, 8, 16], "window_sizes": [6, 6, 6], "resolution_mode": 1, "multiscale_pred": False}
_MISFM_SOURCE = "openmedlab/MIS-FM release (PCT-Net, PyMIC checkpoint)"
_LEVELS = ("e2", "e3", "e4")


# ---------------------------------------------------------------------------------------------- bundle meta


def _labels(classes: int) -> list[dict]:
    names = class_names(classes)
    return [{"value": c, "name": names[c], "color": list(_COLORS[(c - 1) % len(_COLORS)])} for c in range(1, classes)]


def fusion_bundle_meta(preset: Preset, network: str, kwargs: dict, provenance: dict, metrics: dict) -> dict:
    """``bundle.json`` sections of a VF pretext bundle.

    Args:
        preset: the resolved VF preset (stored whole; its fusion section regenerates samples).
        network, kwargs: builder name and full kwargs (``in_channels``, ``out_channels`` = classes).
        provenance, metrics: the bundle's provenance and metrics sections.
    """
    classes = int(kwargs["out_channels"])
    fusion = preset.fusion
    head = {"present": True, "classes": classes, "fusion_classes": classes == fusion.classes, "alphas": [c / (classes - 1) for c in range(classes)]}
    return {
        "network": {"name": network, "kwargs": kwargs},
        "task": "pretext",
        "preprocessing": to_dict(preset.preprocess),
        "labels": _labels(classes),
        "pretext": {"method": "vf", "preset": preset.name, "version": fusion.version, "classes": fusion.classes, "heads": {"fusion": head}},
        "provenance": provenance,
        "metrics": metrics,
        "preset": to_dict(preset),
    }


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class VFModel:
    """A loaded VF pretext bundle: the network (eval mode, on ``device``) and the settings it came with."""

    network: nn.Module
    bundle: Bundle
    preset: Preset
    device: torch.device

    @property
    def fusion(self):
        """The :class:`~ssl3d.config.FusionConfig` the network was trained (or is assumed) with."""
        return self.preset.fusion

    @property
    def classes(self) -> int:
        return int(self.bundle.network["kwargs"]["out_channels"])

    @property
    def preprocessing(self):
        from ..data.preprocess import PreprocessConfig

        return PreprocessConfig(**self.bundle.meta["preprocessing"])

    @property
    def percentile_method(self) -> str:
        return percentile_method(self.preset)

    def logits(self, x: Tensor, chunk: int = 2) -> Tensor:
        """Full-resolution logits (N, classes, D, H, W) of x (N, 1, D, H, W), no gradients.

        Inputs are padded to what the network takes (PCT-Net: exactly its ``input_size``, with the
        batch minimum; UNet: multiples of 8; SwinUNETR: of 32) and the outputs cropped back.

        Raises:
            InputError: x is not (N, 1, D, H, W), or larger than a PCT-Net's fixed input size.
        """
        if x.dim() != 5 or x.shape[1] != 1:
            raise InputError(f"x must be (N, 1, D, H, W), got {tuple(x.shape)}.")
        padded, box = self._pad(x.to(self.device))
        with torch.no_grad():
            return predict_logits(self.network, padded, chunk)[(slice(None), slice(None), *box)]

    def _pad(self, x: Tensor) -> tuple[Tensor, tuple[slice, ...]]:
        kwargs = self.bundle.network["kwargs"]
        if self.bundle.network["name"] == "pctnet":
            from ..nets.pctnet import pad_to_input_size

            return pad_to_input_size(x, kwargs["input_size"], float(x.min()))
        from ..train.segmentation import pad_to_multiple

        from ..nets.builders import size_multiple

        return pad_to_multiple(x, size_multiple(self.bundle.network["name"], kwargs, default=8))


def load_vf_bundle(bundle: Bundle | str | Path, device: torch.device | str = "cpu") -> VFModel:
    """Load a VF pretext bundle (trained or imported) for inference.

    Args:
        bundle: a bundle folder or a loaded :class:`~ssl3d.bundle.Bundle`.
        device: where the network goes.

    Raises:
        BundleError: not a VF pretext bundle, no usable preset section, or weights that do not fit.
    """
    from ..infer.segment import load_model

    bundle = as_bundle(bundle)
    if bundle.task != "pretext" or bundle.meta.get("pretext", {}).get("method") != "vf":
        raise BundleError(f"{bundle.path}: not a Volume Fusion pretext bundle (task {bundle.task!r}, pretext {bundle.meta.get('pretext')!r}).")
    try:
        preset = from_dict(bundle.meta["preset"])
    except (KeyError, ConfigError) as exc:
        raise BundleError(f"{bundle.path}: bundle.json needs the 'preset' section of a vf preset ({exc}).") from None
    if preset.fusion is None:
        raise BundleError(f"{bundle.path}: the preset section {preset.name!r} has no fusion settings.")
    device = torch.device(device)
    return VFModel(load_model(bundle, device), bundle, preset, device)


def _model_space(volumes: Sequence[Any], model: VFModel) -> list[Tensor]:
    """Volumes (Volume, or tensors (1, D, H, W) / (D, H, W) already in model space) -> (1, D, H, W) tensors."""
    from ..data.preprocess import preprocess
    from ..io import Volume

    out = []
    for n, v in enumerate(volumes):
        if isinstance(v, Volume):
            v = preprocess(v, model.preprocessing)[0][0]
        if not isinstance(v, Tensor) or v.dim() not in (3, 4) or (v.dim() == 4 and v.shape[0] != 1):
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise InputError(f"volumes[{n}] must be a Volume or a (1, D, H, W) / (D, H, W) tensor, got {shape}.")
        out.append((v if v.dim() == 4 else v[None]).float().to(model.device))
    return out


def fusion_accuracy(bundle: VFModel | Bundle | str | Path, volumes: Sequence[Any], n: int = 8, seed: int = 0,
                    device: torch.device | str | None = None) -> dict[str, Any]:
    """How well a VF bundle predicts the fusion class of a fixed seeded fused set.

    The set is made as in training (the bundle's ``fusion`` settings: v1 crops fused in a batch, v2
    crop4vf pairs), from ``volumes``; the same arguments give the same set.

    Args:
        bundle: a bundle folder, :class:`~ssl3d.bundle.Bundle` or :class:`VFModel`.
        volumes: :class:`~ssl3d.io.Volume` (preprocessed with the bundle's preprocessing) or
            model-space tensors (1, D, H, W) / (D, H, W).
        n: fused samples (>= 2 for v1).
        seed: seed of the set.
        device: where to run (a loaded VFModel keeps its own); default CPU.

    Returns:
        :func:`~ssl3d.pretext.vf_task.fusion_metrics` (``balanced_accuracy``, ``per_class_recall``,
        ``dice``, ``fg_dice``, ``accuracy``, ``confusion``) plus ``n``, ``seed`` and ``class_names``.
        An all-background model scores balanced accuracy 1 / classes (0.2).

    Raises:
        BundleError: not a VF bundle, or its head does not have the fusion classes.
        InputError: no volumes or volumes of the wrong shape.
    """
    model = bundle if isinstance(bundle, VFModel) else load_vf_bundle(bundle, device or "cpu")
    if model.classes != model.fusion.classes:
        raise BundleError(f"{model.bundle.path}: the network has {model.classes} outputs, not the {model.fusion.classes} fusion classes.")
    if not volumes:
        raise InputError("fusion_accuracy needs at least one volume.")
    vols = _model_space(volumes, model)
    vols = pad_volumes(vols, model.fusion.patch, model.preprocessing.pad_mode) if model.fusion.version == 1 else vols
    x, label = fused_set(vols, model.fusion, n, seed, model.percentile_method)
    metrics = fusion_metrics(model.logits(x), label, model.classes)
    return {**metrics, "n": n, "seed": seed, "class_names": class_names(model.classes)}


# ---------------------------------------------------------------------------------------------- MIS-FM import


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        "data": "pretraining data of the release (not in the file)", "steps": _iteration(checkpoint), "source": str(path.resolve()),
        "source_name": path.name, "sha256": _sha256(path), "format": "mis-fm", "origin": _MISFM_SOURCE,
        "licence": "not stated in the file; see the MIS-FM repository (openmedlab/MIS-FM)",
        "read_from_file": read, "inferred": inferred, "assumed": assumed,
        "match": {"matched": len(report.matched), "missing": report.missing, "unexpected": report.unexpected,
                  "dropped": report.dropped, "partial": not report.complete},
    }
    write_bundle(out_dir, network.state_dict(), fusion_bundle_meta(preset, "pctnet", kwargs, provenance, {}))
    return report


# ---------------------------------------------------------------------------------------------- demo


def demo_stage(ctx) -> None:
    """Demo: VolF pretraining (vf-v2-cpu, small UNet) on phantoms, then its balanced fusion-class accuracy
    on fused held-out phantoms against the 0.2 of an all-background model (--quick: a short run that
    shows the pipeline; the full run learns beyond background).

    Leaves the bundle in ``ctx.shared["vf_bundle"]`` and ``ctx.outputs["vf bundle"]``.
    """
    import shutil

    from ..data.phantoms import make_phantom
    from ..data.phantoms import write_phantom_dataset
    from ..device import resolve_device
    from ..train.loop import train
    from .vf_task import FusionTask

    shape, steps = ((32, 48, 48), 40) if ctx.quick else ((48, 64, 64), 500)
    data = write_phantom_dataset(ctx.out / "data" / "phantoms_vf", range(200, 206), shape)  # pretraining reads the images only
    preset = apply_overrides(get_preset("vf-v2-cpu"), {"train.steps": steps, "train.val_every": steps // 2, "train.checkpoint_every": steps // 2,
                                                         "train.log_every": 10, "train.seed": ctx.seed, "schedule.step_size": 10 * steps})
    run = ctx.out / "vf"
    if run.exists():
        shutil.rmtree(run)
    device = resolve_device(ctx.device)
    outputs = train(FusionTask(data, run / "cache"), preset, run, device)
    held_out = [make_phantom(seed, shape=shape)[0] for seed in (990, 991)]
    m = fusion_accuracy(outputs["bundle"], held_out, n=64, seed=ctx.seed, device=device)  # 64: a stable figure
    recall = ", ".join(f"{name} {r:.2f}" for name, r in zip(m["class_names"], m["per_class_recall"]))
    ctx.say(f"{steps} steps of VolF ({preset.name}); fused held-out phantoms: balanced accuracy "
            f"{m['balanced_accuracy']:.2f} (all-background model 0.20); recall {recall}")
    ctx.shared["vf_bundle"] = outputs["bundle"]
    ctx.outputs["vf bundle"] = outputs["bundle"]
