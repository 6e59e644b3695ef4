"""Typed job configs and the named presets.

A :class:`Preset` owns every setting that changes numbers: preprocessing, network (name + kwargs),
optimizer, schedule, training (steps, batch, AMP, clipping, EMA), and the pretext task's settings.
Faithful presets reproduce the official recipes; ``*-cpu`` presets keep the algorithm and shrink sizes so
they run on 2 cores. Departures from an official recipe are fields in :class:`Options`, all off in the
faithful presets.

Example::

    preset = get_preset("voco-v1-cpu")
    preset = apply_overrides(preset, {"train.steps": 20, "train.batch_size": 2})
    save_config(preset, "run.yaml"); load_config("run.yaml") == preset    # True
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from .data.preprocess import PreprocessConfig
from .errors import ConfigError

__all__ = [
    "NetworkConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "VoCoConfig",
    "FusionConfig",
    "Options",
    "Preset",
    "PRESETS",
    "register_preset",
    "get_preset",
    "preset_names",
    "fine_tune_preset",
    "look_up",
    "apply_overrides",
    "to_dict",
    "from_dict",
    "load_config",
    "save_config",
]


@dataclass
class NetworkConfig:
    """A network by builder name + keyword arguments (the JSON alone rebuilds it)."""

    name: str = "unet-small"
    kwargs: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    amsgrad: bool = False
    momentum: float = 0.9  # sgd only


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, counted in iterations."""

    name: str = "constant"  # constant | warmup_cosine | step | poly
    warmup_steps: int = 0
    step_size: int = 0  # step: multiply by gamma every step_size iterations
    gamma: float = 0.5
    power: float = 0.9  # poly
    interval: int = 1  # poly/step staircase resolution (PyMIC steps its scheduler once per validation round)
    cosine_steps: int = 0  # warmup_cosine: length of warmup + cosine; past it the cosine goes on (periodic); 0 = the run


@dataclass
class TrainConfig:
    steps: int = 100
    batch_size: int = 2
    amp: bool = False  # mixed precision on CUDA (never on CPU)
    grad_clip: float | None = None
    ema: float | None = None  # teacher momentum, where the method has a teacher
    val_every: int = 0  # 0: no validation
    checkpoint_every: int = 50
    log_every: int = 1
    seed: int = 0
    patch: tuple[int, int, int] | None = None  # (D, H, W) training patch of supervised jobs; None: whole volume
    pos_fraction: float = 0.5  # supervised patches centred on a foreground voxel with this probability
    flip_p: float = 0.0  # supervised patches flipped along each axis with this probability
    overlap: float = 0.5  # sliding-window overlap at validation
    include_background: bool = True  # DiceCE over the background class too


@dataclass
class VoCoConfig:
    """VoCo geometry and losses. Sizes are model voxels; the grid lies in the x-y (W-H) plane."""

    version: int = 1  # 1: the VoCo repo's 10k recipe; 2: the large-scale extension
    grid: int = 4
    base_crop: int = 96
    random_crop: int = 96
    crop_out: int = 64  # crops are resized to crop_out^3 (v2: equal to the crop, no resize)
    num_random: int = 2  # random crops per volume ("sw_batch_size")
    window: tuple[int, int, int] | None = None  # v2: random (x, y, z) window cut per step; v1: whole volume
    head_hidden: int = 2048
    head_out: int = 2048
    head_layers: int = 3
    student_dropout: float = 0.0  # v2: Dropout1d(0.2) on the student's embeddings (whole rows)
    teacher: str = "full"  # full: EMA copy of backbone + head (v1); head: EMA head only (v2)
    flip_p: float = 0.2
    rot90_p: float = 0.2
    shift_p: float = 0.1
    shift_offset: float = 0.1


@dataclass
class FusionConfig:
    """Volume Fusion sample generation. Sizes are (D, H, W) model voxels."""

    version: int = 1  # 1: the MIS-FM paper's boxes; 2: VolF grid blocks
    patch: tuple[int, int, int] = (64, 128, 128)
    classes: int = 5
    block_range: tuple[int, int] = (10, 40)  # v1: number of boxes (inclusive)
    size_min: tuple[int, int, int] = (8, 8, 8)  # v1 box sizes
    size_max: tuple[int, int, int] = (40, 80, 80)
    foreground_ratio: float = 0.7  # v2
    block_min: tuple[int, int, int] = (5, 8, 8)  # v2 block sizes
    block_max: tuple[int, int, int] = (20, 32, 32)
    scale: tuple[float, float] = (0.7, 1.5)  # v2 random resized crop, per axis
    gamma: tuple[float, float] = (0.7, 1.5)  # v2
    inversion_p: float = 0.25  # v2
    # the loss (ssl3d.pretext.vf_loss.DS_WEIGHTS / CE_FORMS). off: one output, as the official VF configs
    # (multiscale_pred = False); equal | halving (1/2^i): PCT-Net's or the UNet's 4 outputs, deep-supervised
    deep_supervision: str = "off"
    ce: str = "clamped"  # clamped: log(0.999 p + 5e-4), PyMIC <= v0.5.0 (a906dfc) | plain: log p, PyMIC 8bcebd6


@dataclass
class Options:
    """Named departures from the official recipes; all off in faithful presets."""

    histogram_percentile: bool = False  # VF v2: histogram percentiles instead of exact ones


@dataclass
class Preset:
    name: str
    method: str  # voco | vf | supervised | segmentation | interactive
    description: str = ""
    source: str = ""
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    voco: VoCoConfig | None = None
    fusion: FusionConfig | None = None
    options: Options = field(default_factory=Options)


# ---------------------------------------------------------------------------------------------- registry

PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    if preset.name in PRESETS:
        raise ConfigError(f"preset {preset.name!r} is already registered.")
    PRESETS[preset.name] = preset
    return preset


def preset_names(method: str | None = None) -> list[str]:
    return sorted(name for name, p in PRESETS.items() if method is None or p.method == method)


def look_up(value: str, choices, what: str) -> str:
    """``value`` if it is one of ``choices``; else ConfigError with "did you mean ...?" and the valid set."""
    choices = list(choices)
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {what} {value!r}.{hint} Valid: {', '.join(choices)}.")


def get_preset(name: str) -> Preset:
    """A fresh copy of a registered preset (callers may change it freely)."""
    return from_dict(to_dict(PRESETS[look_up(name, sorted(PRESETS), "preset")]))


def fine_tune_preset(preset: Preset, task: str) -> Preset:
    """``preset`` if it fine-tunes ``task`` (``finetune --task``, a study's cells); a pretext preset (VoCo, VF) is
    refused, naming the ones that fit."""
    if preset.method != task:
        fitting = ", ".join(name for name, p in PRESETS.items() if p.method == task)
        hint = " (a pretext preset: pretrain with 'ssl3d pretrain', then pass its bundle with --init)" if preset.method in ("voco", "vf") else ""
        raise ConfigError(f"--preset {preset.name} is a {preset.method!r} preset{hint}; finetune --task {task} takes {fitting}.")
    return preset


# ---------------------------------------------------------------------------------------------- (de)serialisation


def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain dicts/lists (tuples become lists), ready for JSON/YAML."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if is_dataclass(hint):
        return _build(hint, value, where)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        args = get_args(hint)
        inner = args[0] if args else Any
        return tuple(_convert(v, inner, where) for v in value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}.")
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}.")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        look_up(key, names, f"setting in {where or 'config'}")
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}.") from None


def from_dict(data: dict) -> Preset:
    """Build a Preset from a dict, rejecting unknown keys (with suggestions) and wrong types."""
    return _build(Preset, data, "")


def load_config(path: str | Path) -> Preset:
    """Read a preset from JSON or YAML (``--config FILE``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json and yaml raise different types
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'} ({exc}).") from None
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_config(preset: Preset, path: str | Path) -> Path:
    path = Path(path)
    data = to_dict(preset)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    else:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def apply_overrides(preset: Preset, overrides: dict[str, Any]) -> Preset:
    """Set dotted keys (``{"train.steps": 10}``); ``None`` values are skipped (option not given)."""
    data = to_dict(preset)
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"cannot set {key!r}: {part!r} is not a section of preset {preset.name!r}.")
            node = node[part]
        look_up(parts[-1], list(node), f"setting in {'.'.join(parts[:-1]) or 'preset'}")
        node[parts[-1]] = to_dict(value)
    return from_dict(data)


# ---------------------------------------------------------------------------------------------- presets

_VOCO_SRC = "Luffy03/VoCo @ ba7b7bd (10k recipe)"
_VOCO2_SRC = "Luffy03/Large-Scale-Medical @ 1ad538b (Self-supervised/)"
_VF1_SRC = "HiLab-git/PyMIC @ a906dfc + PyMIC_examples @ a581dc8"
_VF2_SRC = ("HiLab-git/PyMIC @ 8bcebd6 (crop4vf.py, loss) + PyMIC_examples @ 2dd2fdd "
            "(luna_pretrain/unet3d_volf.cfg: blocks, 80k iterations, StepLR 20k, validation every 1000)")
# use_checkpoint: gradient checkpointing as the official VoCo codes (memory only; numbers unchanged);
# merging "v1.3": MONAI 1.3.0's 3-D token merge, which the official codes pin (ssl3d.nets.swin_merging)
_SWIN_B = NetworkConfig("swinunetr", {"feature_size": 48, "use_v2": True, "use_checkpoint": True, "merging": "v1.3"})
_VOCO_OPTIM = OptimConfig("adamw", lr=1e-4, weight_decay=0.01, amsgrad=True)
_VOCO_SCHEDULE = ScheduleConfig("warmup_cosine", warmup_steps=5000)
_CNN_SMALL = NetworkConfig("cnn-small", {"channels": [8, 16, 32, 64]})
_UNET_SMALL = NetworkConfig("unet-small", {"channels": [8, 16, 32, 64]})
_VF_OPTIM = OptimConfig("adam", lr=1e-3, weight_decay=1e-5)
_PCTNET = NetworkConfig("pctnet", {"resolution_mode": 1})


def _register_defaults() -> None:
    # the official VoCo reads v1 images as int16 (LoadImaged(dtype=np.int16)) and pads with 0 (SpatialPadd)
    v1_pre = PreprocessConfig("RAS", None, "window:-175,250", 0.3, None, (384, 384, 96), "trilinear", True,
                              pad_mode="zero", load_dtype="int16")
    v2_pre = PreprocessConfig("RAS", (1.5, 1.5, 1.5), "window:-175,250", 0.0, (192, 192, 64), pad_mode="zero")
    register_preset(Preset(
        "voco-v1", "voco", "VoCo 10k recipe: 4x4 grid, full EMA teacher, SwinUNETR-v2 B", _VOCO_SRC, v1_pre, _SWIN_B,
        _VOCO_OPTIM, _VOCO_SCHEDULE, TrainConfig(250_000, 2, amp=True, ema=0.9, checkpoint_every=1000, log_every=10),
        voco=VoCoConfig(1, 4, 96, 96, 64, 2)))
    register_preset(Preset(
        "voco-v2", "voco", "VoCo large-scale extension: 3x3 grid, shared backbone, EMA heads", _VOCO2_SRC, v2_pre, _SWIN_B,
        _VOCO_OPTIM, _VOCO_SCHEDULE, TrainConfig(2_000_000, 2, amp=True, ema=0.9, checkpoint_every=20_000, log_every=10),
        voco=VoCoConfig(2, 3, 64, 64, 64, 2, (192, 192, 64), 1024, 1024, 3, 0.2, "head", 0.2, 0.2, 0.5, 0.1)))
    # CPU presets cache float16 (half the disk; bounded windows lose < 3e-4); faithful presets keep float32
    cpu_pre = PreprocessConfig("RAS", None, "window:-175,250", 0.3, None, (64, 64, 32), "trilinear", True, "float16")
    register_preset(Preset(
        "voco-v1-cpu", "voco", "VoCo v1 algorithm on a small CNN encoder and 16^3 crops (2 cores)", _VOCO_SRC, cpu_pre,
        _CNN_SMALL, OptimConfig("adamw", lr=1e-3, weight_decay=0.01, amsgrad=True), ScheduleConfig("warmup_cosine", 10),
        TrainConfig(200, 4, ema=0.9, checkpoint_every=50), voco=VoCoConfig(1, 4, 16, 16, 16, 4, None, 256, 256, 3)))
    cpu2_pre = PreprocessConfig("RAS", (4.0, 4.0, 4.0), "window:-175,250", 0.0, (48, 48, 16), dtype="float16")
    register_preset(Preset(
        "voco-v2-cpu", "voco", "VoCo v2 algorithm on a small CNN encoder and 16^3 crops (2 cores)", _VOCO2_SRC, cpu2_pre,
        _CNN_SMALL, OptimConfig("adamw", lr=1e-3, weight_decay=0.01, amsgrad=True), ScheduleConfig("warmup_cosine", 10),
        TrainConfig(200, 4, ema=0.9, checkpoint_every=50),
        voco=VoCoConfig(2, 3, 16, 16, 16, 4, (48, 48, 16), 256, 256, 3, 0.2, "head", 0.2, 0.2, 0.5, 0.1)))
    # both VF generations read the LUNA pipeline's input: HU clipped to [-1000, 1000], mapped to [-1, 1] and
    # padded by reflection (PyMIC_examples luna_preprocess.py)
    vf_pre = PreprocessConfig(None, None, "window:-1000,1000,-1,1", pad_mode="reflect")
    vf_cpu_pre = PreprocessConfig(None, None, "window:-1000,1000,-1,1", dtype="float16")
    register_preset(Preset(
        "vf-v1", "vf", "Volume Fusion as in the MIS-FM paper (random boxes), PCT-Net", _VF1_SRC, vf_pre, _PCTNET, _VF_OPTIM,
        ScheduleConfig("step", step_size=40_000, gamma=0.5), TrainConfig(120_000, 2, val_every=500, checkpoint_every=500),
        fusion=FusionConfig(1)))
    register_preset(Preset(
        "vf-v2", "vf", "VolF: two resized crops of one volume, grid blocks, PCT-Net", _VF2_SRC,
        vf_pre, _PCTNET, _VF_OPTIM,
        ScheduleConfig("step", step_size=20_000, gamma=0.5), TrainConfig(80_000, 2, val_every=1000, checkpoint_every=1000),
        fusion=FusionConfig(2, ce="plain")))
    # the CPU presets keep the 4-output deep supervision they were tuned with (a named choice, not the official one)
    register_preset(Preset(
        "vf-v1-cpu", "vf", "Volume Fusion v1 on the small UNet with 16x32x32 patches (2 cores)", _VF1_SRC, vf_cpu_pre, _UNET_SMALL,
        _VF_OPTIM, ScheduleConfig("step", step_size=100, gamma=0.5), TrainConfig(60, 4, val_every=30, checkpoint_every=30),
        # box sizes scaled with the patch; 10-40 boxes keep the official background share (~48 %, vf_stats.json)
        fusion=FusionConfig(1, (16, 32, 32), block_range=(10, 40), size_min=(2, 2, 2), size_max=(10, 20, 20),
                            deep_supervision="equal")))
    register_preset(Preset(
        "vf-v2-cpu", "vf", "VolF on the small UNet with 16x32x32 patches (2 cores)", _VF2_SRC, vf_cpu_pre,
        _UNET_SMALL, _VF_OPTIM, ScheduleConfig("step", step_size=1000, gamma=0.5),
        # batch 2 as the official recipe; 680 steps reach a mean balanced accuracy ~0.33 on held-out phantoms
        TrainConfig(680, 2, val_every=680, checkpoint_every=680, log_every=10),
        fusion=FusionConfig(2, (16, 32, 32), block_min=(2, 4, 4), block_max=(5, 8, 8), deep_supervision="halving", ce="plain")))
    register_preset(Preset(
        "seg-cpu", "segmentation", "Small UNet segmentation at 2.5 mm with 32^3 patches (2 cores)", "ssl3d",
        PreprocessConfig("RAS", (2.5, 2.5, 2.5), "window:-175,250", None, pad_to=(32, 32, 32), dtype="float16"), _UNET_SMALL,
        OptimConfig("adamw", lr=1e-2, weight_decay=1e-5), ScheduleConfig("constant"),
        TrainConfig(120, 2, val_every=60, checkpoint_every=60, patch=(32, 32, 32))))
    register_preset(Preset(
        "voco-btcv", "segmentation", "VoCo's BTCV fine-tuning: SwinUNETR-v2 B, roi 96^3, DiceCE without background",
        "Luffy03/VoCo @ ba7b7bd Finetune/BTCV (LR schedule stepped per iteration: warmup 100, cosine period 5800)",
        PreprocessConfig("RAS", (1.5, 1.5, 1.5), "window:-175,250", 0.0, pad_to=(96, 96, 96)), _SWIN_B,
        OptimConfig("adamw", lr=3e-4, weight_decay=1e-5), ScheduleConfig("warmup_cosine", warmup_steps=100, cosine_steps=3000),
        TrainConfig(72_000, 16, val_every=1200, checkpoint_every=1200, patch=(96, 96, 96), pos_fraction=0.75, flip_p=0.2, overlap=0.75,
                    include_background=False)))
    register_preset(Preset(
        "misfm-la", "segmentation", "MIS-FM demo fine-tuning: PCT-Net, 64x128x128 patches, Adam, polynomial 0.8",
        "openmedlab/MIS-FM @ 1506d65 demo/pctnet_pretrain.cfg",
        PreprocessConfig(None, None, "zscore", None, pad_to=(128, 128, 64)), _PCTNET,
        OptimConfig("adam", lr=1e-3, weight_decay=1e-5), ScheduleConfig("poly", power=0.8, interval=250),
        TrainConfig(6000, 2, val_every=250, checkpoint_every=250, patch=(64, 128, 128), pos_fraction=0.0, flip_p=0.5)))
    register_preset(Preset(
        "interactive-cpu", "interactive", "Click-to-segment small UNet (image + 2 guidance channels) on 2 cores", "ssl3d",
        PreprocessConfig("RAS", (2.5, 2.5, 2.5), "window:-175,250", None, pad_to=(32, 32, 32), dtype="float16"),
        NetworkConfig("unet-small", {"channels": [8, 16, 32, 64], "in_channels": 3}),
        OptimConfig("adamw", lr=1e-2, weight_decay=1e-5), ScheduleConfig("warmup_cosine", 5),
        TrainConfig(100, 2, val_every=50, checkpoint_every=50, patch=(32, 32, 32))))


_register_defaults()
