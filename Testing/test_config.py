import json

import pytest

from ssl3d.config import PRESETS, apply_overrides, from_dict, get_preset, load_config, save_config, to_dict
from ssl3d.errors import ConfigError


def test_every_preset_round_trips_through_json_and_yaml(tmp_path):
    for name in PRESETS:
        preset = get_preset(name)
        assert load_config(save_config(preset, tmp_path / "p.json")) == preset
        assert load_config(save_config(preset, tmp_path / "p.yaml")) == preset


def test_faithful_presets_take_the_official_values():
    v1 = get_preset("voco-v1")
    assert (v1.voco.grid, v1.voco.base_crop, v1.voco.crop_out, v1.preprocess.resize) == (4, 96, 64, (384, 384, 96))
    assert (v1.optim.name, v1.optim.lr, v1.optim.weight_decay, v1.optim.amsgrad) == ("adamw", 1e-4, 0.01, True)
    assert v1.schedule.warmup_steps == 5000 and v1.train.grad_clip is None and v1.train.ema == 0.9
    v2 = get_preset("voco-v2")
    assert (v2.voco.grid, v2.voco.base_crop, v2.voco.teacher, v2.voco.student_dropout) == (3, 64, "head", 0.2)
    assert v2.preprocess.spacing == (1.5, 1.5, 1.5)
    vf1, vf2 = get_preset("vf-v1"), get_preset("vf-v2")
    assert vf1.fusion.patch == (64, 128, 128) and vf1.train.steps == 120_000 and vf1.schedule.step_size == 40_000
    assert vf2.train.steps == 80_000 and vf2.schedule.step_size == 20_000 and vf2.fusion.deep_supervision == "halving"
    for preset in (vf1, vf2):
        assert not preset.train.amp and preset.train.grad_clip is None
        assert (preset.optim.name, preset.optim.lr, preset.optim.weight_decay) == ("adam", 1e-3, 1e-5)


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
