import json

import pytest

from ssl3d.config import PRESETS, apply_overrides, from_dict, get_preset, load_config, save_config, to_dict
from ssl3d.errors import ConfigError


def test_every_preset_round_trips_through_json_and_yaml(tmp_path):
    for name in PRESETS:
        preset = get_preset(name)
        assert load_config(save_config(preset, tmp_path / "p.json")) == preset
        assert load_config(save_config(preset, tmp_path / "p.yaml")) == preset


# The official values, field by field, as ../shared/reference/voco.md (v1: Luffy03/VoCo 10k recipe; v2:
# Large-Scale-Medical Self-supervised/, labelled-abdomen pipeline) and misfm.md (vf-v1: PyMIC a906dfc +
# PyMIC_examples a581dc8; vf-v2: crop4vf.py + PyMIC_examples HEAD) state them. VF flips (p 0.5 per axis) are
# fixed in the generator, not preset fields.
# merging v1.3: MONAI 1.3.0 (pinned by both VoCo repositories) merges Swin tokens in its own order.
_VOCO_COMMON = {
    "network.name": "swinunetr", "network.kwargs": {"feature_size": 48, "use_v2": True, "use_checkpoint": True, "merging": "v1.3"},
    "optim.name": "adamw", "optim.lr": 1e-4, "optim.weight_decay": 0.01, "optim.amsgrad": True, "optim.betas": [0.9, 0.999],
    "schedule.name": "warmup_cosine", "schedule.warmup_steps": 5000, "schedule.cosine_steps": 0,  # cosine over the run
    "train.batch_size": 2, "train.amp": True, "train.grad_clip": None, "train.ema": 0.9,
    "preprocess.orientation": "RAS", "preprocess.intensity": "window:-175,250", "preprocess.dtype": "float32",
    "preprocess.pad_mode": "zero",  # MONAI SpatialPadd's constant 0
    "voco.crop_out": 64, "voco.num_random": 2, "voco.head_layers": 3,
    "voco.flip_p": 0.2, "voco.rot90_p": 0.2, "voco.shift_offset": 0.1,
}
_VF_COMMON = {
    "network.name": "pctnet", "network.kwargs": {"resolution_mode": 1},
    "optim.name": "adam", "optim.lr": 1e-3, "optim.weight_decay": 1e-5, "optim.amsgrad": False,
    "schedule.name": "step", "schedule.gamma": 0.5, "train.amp": False, "train.grad_clip": None, "train.ema": None,
    "preprocess.orientation": None, "preprocess.spacing": None, "preprocess.intensity": "window:-1000,1000,-1,1",
    "preprocess.foreground_threshold": None, "preprocess.pad_to": None, "preprocess.resize": None,
    "preprocess.pad_mode": "reflect", "preprocess.load_dtype": None,  # PyMIC_examples luna_preprocess.py
    "fusion.patch": [64, 128, 128], "fusion.classes": 5,
}
OFFICIAL = {
    "voco-v1": {
        **_VOCO_COMMON, "train.steps": 250_000,
        "preprocess.spacing": None, "preprocess.foreground_threshold": 0.3, "preprocess.pad_to": None,
        "preprocess.resize": [384, 384, 96], "preprocess.resize_mode": "trilinear", "preprocess.align_corners": True,
        "preprocess.load_dtype": "int16",  # LoadImaged(dtype=np.int16)
        "voco.version": 1, "voco.grid": 4, "voco.base_crop": 96, "voco.random_crop": 96, "voco.window": None,
        "voco.head_hidden": 2048, "voco.head_out": 2048, "voco.student_dropout": 0.0, "voco.teacher": "full", "voco.shift_p": 0.1,
    },
    "voco-v2": {
        **_VOCO_COMMON, "train.steps": 2_000_000,
        "preprocess.spacing": [1.5, 1.5, 1.5], "preprocess.foreground_threshold": 0.0, "preprocess.pad_to": [192, 192, 64],
        "preprocess.resize": None, "preprocess.load_dtype": None,
        "voco.version": 2, "voco.grid": 3, "voco.base_crop": 64, "voco.random_crop": 64, "voco.window": [192, 192, 64],
        "voco.head_hidden": 1024, "voco.head_out": 1024, "voco.student_dropout": 0.2, "voco.teacher": "head", "voco.shift_p": 0.5,
    },
    "vf-v1": {
        **_VF_COMMON, "train.steps": 120_000, "train.batch_size": 2, "schedule.step_size": 40_000, "train.val_every": 500,
        "fusion.version": 1, "fusion.block_range": [10, 40], "fusion.size_min": [8, 8, 8], "fusion.size_max": [40, 80, 80],
        # one output, as unet3d_volumefusion.cfg (multiscale_pred = False); the CE of PyMIC a906dfc
        "fusion.deep_supervision": "off", "fusion.ce": "clamped",
    },
    "vf-v2": {
        **_VF_COMMON, "train.steps": 80_000, "schedule.step_size": 20_000, "train.val_every": 1000,
        "fusion.version": 2, "fusion.foreground_ratio": 0.7, "fusion.block_min": [5, 8, 8], "fusion.block_max": [20, 32, 32],
        "fusion.scale": [0.7, 1.5], "fusion.gamma": [0.7, 1.5], "fusion.inversion_p": 0.25,
        # one output, as unet3d_volf.cfg; the plain -y log p of PyMIC 8bcebd6
        "fusion.deep_supervision": "off", "fusion.ce": "plain",
    },
}


def _field(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_faithful_presets_take_the_official_values(name):
    data = to_dict(get_preset(name))
    wrong = {key: (_field(data, key), value) for key, value in OFFICIAL[name].items() if _field(data, key) != value}
    assert not wrong, f"{name}: field: (preset, official) {wrong}"


def test_lookup_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="Did you mean 'voco-v1'"):
        get_preset("voco_v1")
    with pytest.raises(ConfigError, match="unknown preset 'zzz'"):
        get_preset("zzz")


def test_get_preset_returns_a_copy():
    a = get_preset("voco-v1-cpu")
    a.train.steps = 1
    assert get_preset("voco-v1-cpu").train.steps != 1


def test_overrides():
    preset = apply_overrides(get_preset("voco-v1-cpu"), {"train.steps": 7, "train.batch_size": None, "optim.lr": 0.5})
    assert preset.train.steps == 7 and preset.optim.lr == 0.5
    assert preset.train.batch_size == get_preset("voco-v1-cpu").train.batch_size
    with pytest.raises(ConfigError, match="Did you mean 'steps'"):
        apply_overrides(preset, {"train.stepz": 1})
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(preset, {"fusion.patch": [1, 2, 3]})


def test_bad_files(tmp_path):
    data = to_dict(get_preset("vf-v1"))
    data["train"]["steps"] = "many"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="bad.json: train.steps must be int"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "broken.yaml").write_text("a: [")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="unknown setting"):
        from_dict({**to_dict(get_preset("vf-v1")), "colour": 1})
