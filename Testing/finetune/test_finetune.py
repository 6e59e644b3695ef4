"""Fine-tuning from pretext bundles and from random init, on phantoms (issue: fine-tuning and segmentation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssl3d.bundle import read_bundle
from ssl3d.cli import main
from ssl3d.config import apply_overrides, get_preset
from ssl3d.data.phantoms import LABELS, make_phantom
from ssl3d.data.phantoms import write_phantom_dataset
from ssl3d.errors import BundleError, ConfigError
from ssl3d.infer.segment import segment_volume
from ssl3d.train.init import finetune_network, load_pretext_weights

STEPS = 120
HELD_OUT = (950, 951)


pytestmark = pytest.mark.usefixtures("one_thread")  # Testing/conftest.py


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("ft"), range(200, 208), shape=(32, 48, 48))


def _finetune(tmp_path, dataset, *extra):
    out = tmp_path / "run"
    code = main(["finetune", "--data", str(dataset), "--out", str(out), "--steps", str(STEPS), "--val-fraction", "0.25", "--device", "cpu", *extra])
    assert code == 0
    return out


def _best_organ_dice(bundle) -> float:
    """Held-out Dice of the best-learnt organ: at this scale (120 CPU steps) a model reliably learns some
    organs (which ones varies with the start), not all."""
    scores = {v: [] for v in LABELS}
    for seed in HELD_OUT:
        image, truth = make_phantom(seed, shape=(32, 48, 48))
        pred = segment_volume(bundle, image, "cpu")
        assert pred.same_grid(image)
        for v in LABELS:
            a, b = pred.array == v, truth.array == v
            scores[v].append(2 * np.sum(a & b) / max(1, a.sum() + b.sum()))
    return max(float(np.mean(s)) for s in scores.values())


def test_random_init_reaches_a_fixed_dice(tmp_path, dataset):
    run = _finetune(tmp_path, dataset)
    bundle = read_bundle(run / "bundle")
    assert bundle.task == "segmentation" and bundle.labels[1][0] == "label 1"
    assert bundle.meta["provenance"]["init"] is None
    assert _best_organ_dice(bundle) >= 0.5


def test_from_a_voco_bundle(tmp_path, dataset, voco_cpu_bundle, capsys):
    run = _finetune(tmp_path, dataset, "--init", str(voco_cpu_bundle), "--labels", "1:liver,2:spleen")
    shown = capsys.readouterr().err
    assert "initialised " in shown and f"tensors from {voco_cpu_bundle}" in shown  # the load report, printed
    bundle = read_bundle(run / "bundle")
    init = bundle.meta["provenance"]["init"]
    assert init["loaded"] > 0 and all(name.startswith("encoder.") for name in init["loaded_names"])
    assert bundle.labels[1][0] == "liver"
    assert _best_organ_dice(bundle) >= 0.5
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert any("initialised" in e.get("message", "") for e in events if e["event"] == "log")


def test_from_a_vf_bundle(tmp_path, dataset, vf_cpu_bundle):
    run = _finetune(tmp_path, dataset, "--init", str(vf_cpu_bundle))
    bundle = read_bundle(run / "bundle")
    init = bundle.meta["provenance"]["init"]
    assert init["loaded"] > 0 and any(name.startswith("decode.") for name in init["loaded_names"])  # the whole network
    assert all(not name.startswith("heads.") for name in init["loaded_names"])  # but not the 5-class head
    assert _best_organ_dice(bundle) >= 0.5


def test_freeze_encoder_keeps_the_pretrained_encoder(tmp_path, dataset, voco_cpu_bundle):
    run = _finetune(tmp_path, dataset, "--init", str(voco_cpu_bundle), "--freeze-encoder", "--steps", "3")
    tuned = read_bundle(run / "bundle").state_dict()
    from ssl3d.pretext.voco_bundle import voco_backbone_state

    _, pretrained = voco_backbone_state(voco_cpu_bundle)
    assert all(torch.equal(tuned["encoder." + k], v) for k, v in pretrained.items())


def test_a_validation_fraction_that_holds_out_nothing_is_said(tmp_path, dataset, capsys):
    from ssl3d.data.datasets import find_cases

    two = tmp_path / "two"
    (two / "imagesTr").mkdir(parents=True)
    (two / "labelsTr").mkdir()
    for case in find_cases(dataset, labels=True)[:2]:
        (two / "imagesTr" / case.image.name).symlink_to(case.image)
        (two / "labelsTr" / case.label.name).symlink_to(case.label)
    out = tmp_path / "run"
    assert main(["finetune", "--data", str(two), "--out", str(out), "--steps", "1", "--val-fraction", "0.2", "--device", "cpu"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: --val-fraction 0.2 of 2 case(s) holds out none: this run does not validate (no validation "
                        "Dice, the last checkpoint is exported); use more cases or a larger fraction"]


def test_train_cases_and_bad_inputs(tmp_path, dataset, voco_cpu_bundle, capsys):
    run = _finetune(tmp_path, dataset, "--train-cases", "2", "--steps", "2")
    assert read_bundle(run / "bundle").meta["provenance"]["train_cases"] == 2
    base = ["finetune", "--data", str(dataset), "--steps", "2", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a"), "--train-cases", "99"]) == 2
    assert main([*base, "--out", str(tmp_path / "b"), "--freeze-encoder"]) == 2
    assert main([*base, "--out", str(tmp_path / "c"), "--init", str(tmp_path / "nothing")]) == 2
    assert main([*base, "--out", str(tmp_path / "d"), "--init", str(run / "bundle")]) == 2  # a segmentation bundle
    assert main([*base, "--out", str(tmp_path / "e"), "--init", str(voco_cpu_bundle), "--network", "pctnet"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith(("train: ", "cache: "))]  # progress lines
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)


def test_a_bundle_that_does_not_fit_is_an_error(voco_cpu_bundle):
    from ssl3d.nets.unet import UNet

    with pytest.raises(BundleError, match="does not fit"):
        load_pretext_weights(UNet(1, 3, channels=(4, 8)), voco_cpu_bundle)
    assert finetune_network(voco_cpu_bundle, None).name == "unet-small"


def test_swinunetr_and_pctnet_one_step_smoke(tmp_path):
    data = write_phantom_dataset(tmp_path / "d", range(300, 302), shape=(32, 48, 48))
    swin = apply_overrides(get_preset("seg-cpu"), {"train.steps": 1, "train.batch_size": 1, "train.val_every": 0,
                                                   "train.patch": [64, 64, 64], "preprocess.pad_to": [64, 64, 64],
                                                   "network.name": "swinunetr", "network.kwargs": {"feature_size": 12, "depths": [1, 1, 1, 1]}})
    pct = apply_overrides(get_preset("seg-cpu"), {"train.steps": 1, "train.batch_size": 1, "train.val_every": 0, "train.patch": [16, 32, 32],
                                                  "network.name": "pctnet", "network.kwargs": {"input_size": [16, 32, 32], "feature_chns": [4, 8, 16, 32, 64],
                                                                                               "window_sizes": [3, 3, 3]}})
    from ssl3d.config import save_config

    for name, preset in (("swin", swin), ("pct", pct)):
        config = save_config(preset, tmp_path / f"{name}.yaml")
        assert main(["finetune", "--data", str(data), "--out", str(tmp_path / name), "--config", str(config), "--val-fraction", "0", "--device", "cpu"]) == 0
        assert (tmp_path / name / "bundle" / "model.safetensors").is_file()


def test_presets_follow_the_official_recipes():
    btcv = get_preset("voco-btcv")
    assert btcv.train.patch == (96, 96, 96) and btcv.optim.lr == 3e-4 and btcv.optim.weight_decay == 1e-5
    assert not btcv.train.include_background and btcv.train.overlap == 0.75
    la = get_preset("misfm-la")
    assert (la.optim.name, la.optim.lr, la.schedule.name, la.schedule.power, la.train.steps) == ("adam", 1e-3, "poly", 0.8, 6000)
    with pytest.raises(ConfigError):
        apply_overrides(la, {"train.patchy": 1})


def test_dataset_json_names_and_median_spacing(tmp_path, dataset, capsys):
    from ssl3d.data.datasets import find_cases, median_spacing

    entries = [{"image": str(c.image), "label": str(c.label)} for c in find_cases(dataset, labels=True)]
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "5": "spine"}, "training": entries}))
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(tmp_path / "dataset.json"), "--out", str(run), "--steps", "2", "--spacing", "median", "--device", "cpu"]) == 0
    bundle = read_bundle(run / "bundle")
    assert bundle.labels[1][0] == "liver" and bundle.labels[5][0] == "spine" and bundle.labels[2][0] == "label 2"
    expected = median_spacing(find_cases(dataset, labels=True))
    assert bundle.meta["preprocessing"]["spacing"] == pytest.approx(list(expected))
    assert main(["finetune", "--data", str(dataset), "--out", str(tmp_path / "x"), "--spacing", "1,2", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --spacing")
