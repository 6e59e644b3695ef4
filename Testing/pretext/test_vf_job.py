"""Volume Fusion job: the task on the one loop, the pretext bundle, fusion accuracy on held-out phantoms,
the CLI (one process and torchrun), MIS-FM weight import, and a PCT-Net step (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl3d.bundle import read_bundle
from ssl3d.config import apply_overrides, get_preset
from ssl3d.errors import ConfigError, WeightsError
from ssl3d.pretext import vf_samples, vf_task
from ssl3d.pretext.vf_bundle import fusion_accuracy, load_vf_bundle
from ssl3d.pretext.vf_samples import fusion_metrics
from ssl3d.pretext.vf_task import FusionTask, apply_network_choice
from ssl3d.weights.misfm import import_misfm_weights
from ssl3d.train.loop import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PHANTOM = (48, 64, 64)  # the shape of the session VF bundle's phantoms (Testing/conftest.py)
HELD_OUT = (990, 991)  # phantom seeds never trained on



pytestmark = pytest.mark.usefixtures("one_thread")  # Testing/conftest.py


# ---------------------------------------------------------------------------------------------- training


SCORE_SEEDS = (1, 2, 3)  # three fixed fused sets of 64 held-out samples each


def test_vf_cpu_run_beats_all_background_on_held_out_phantoms(vf_cpu_bundle):
    from ssl3d.data.phantoms import make_phantom

    volumes = [make_phantom(seed, shape=PHANTOM)[0] for seed in HELD_OUT]
    model = load_vf_bundle(vf_cpu_bundle)
    scores = [fusion_accuracy(model, volumes, n=64, seed=seed) for seed in SCORE_SEEDS]
    mean = float(np.mean([m["balanced_accuracy"] for m in scores]))
    # an all-background model scores 0.20; vf-v2-cpu (680 steps of 2) scores 0.32-0.33 on these sets
    assert mean >= 0.30, [round(m["balanced_accuracy"], 3) for m in scores]
    m = scores[0]
    assert len(m["per_class_recall"]) == 5 and m["class_names"][2] == "alpha 1/2"
    assert np.asarray(m["confusion"]).sum() == 64 * 16 * 32 * 32
    again = fusion_accuracy(model, volumes, n=64, seed=SCORE_SEEDS[0])
    assert again["confusion"] == m["confusion"]  # the fused set is fixed by its seed


def test_pretext_bundle_holds_the_whole_network_and_its_fusion_head(vf_cpu_bundle):
    bundle = read_bundle(vf_cpu_bundle)
    assert bundle.task == "pretext"
    assert bundle.meta["pretext"]["method"] == "vf" and bundle.meta["pretext"]["preset"] == "vf-v2-cpu"
    assert bundle.meta["pretext"]["heads"]["fusion"] == {"present": True, "classes": 5, "fusion_classes": True,
                                                         "alphas": [0.0, 0.25, 0.5, 0.75, 1.0]}
    assert bundle.network["name"] == "unet-small" and bundle.network["kwargs"]["out_channels"] == 5
    assert [e["name"] for e in bundle.meta["labels"]] == ["alpha 1/4", "alpha 1/2", "alpha 3/4", "alpha 1"]
    assert bundle.meta["preprocessing"]["orientation"] is None  # VF presets do not reorient
    assert bundle.meta["metrics"]["validation"]["step"] == get_preset("vf-v2-cpu").train.steps  # one validation, at the end
    model = load_vf_bundle(bundle)
    assert model.fusion.version == 2 and model.classes == 5
    assert model.logits(torch.zeros(1, 1, 12, 20, 20)).shape == (1, 5, 12, 20, 20)  # padded and cropped back


def test_v1_batch_below_two_is_a_config_error(tmp_path, vf_phantoms, vf_cache):
    preset = apply_overrides(get_preset("vf-v1-cpu"), {"train.steps": 1, "train.batch_size": 1})
    with pytest.raises(ConfigError, match="--batch-size must be >= 2"):
        train(FusionTask(vf_phantoms, vf_cache), preset, tmp_path / "run", torch.device("cpu"))


class _RecordingTask(FusionTask):
    """Records the validation set it scores at each validation."""

    seen: list[tuple[torch.Tensor, torch.Tensor]]

    def validate(self, ctx, step):
        self.seen = getattr(self, "seen", []) + [(self.val[0].clone(), self.val[1].clone())]
        return super().validate(ctx, step)


def test_best_checkpoint_is_the_best_fg_dice_validation(tmp_path, vf_phantoms, vf_cache):
    from ssl3d.train.checkpoint import load_checkpoint

    # lr 2e-2 overshoots after a few steps, so the best validation is not the last one
    preset = apply_overrides(get_preset("vf-v1-cpu"), {"train.steps": 6, "train.batch_size": 2, "train.val_every": 2, "optim.lr": 2e-2})
    task = _RecordingTask(vf_phantoms, vf_cache, val_samples=4)
    outputs = train(task, preset, tmp_path, torch.device("cpu"))
    dice = {e["step"]: e["value"] for e in _events(tmp_path) if e["event"] == "metric" and e["name"] == "fg_dice"}
    assert sorted(dice) == [2, 4, 6]
    best_step = max(dice, key=lambda step: (dice[step], -step))  # the first of equal scores is kept
    assert best_step < 6, dice  # otherwise "the last checkpoint" would pass too
    best = next(e for e in _events(tmp_path) if e["event"] == "done")["best"]
    assert best["step"] == best_step and best["score"] == pytest.approx(max(dice.values()))
    assert outputs["checkpoint"].name == "best.pt" and load_checkpoint(outputs["checkpoint"])["step"] == best_step
    bundle = read_bundle(outputs["bundle"])
    assert bundle.meta["metrics"]["validation"]["step"] == best_step and bundle.meta["provenance"]["steps"] == best_step
    saved = load_checkpoint(outputs["checkpoint"])["modules"]["model"]
    assert all(torch.equal(bundle.state_dict()[k], v) for k, v in saved.items())
    assert len(task.seen) == 3 and all(torch.equal(x, task.seen[0][0]) and torch.equal(y, task.seen[0][1]) for x, y in task.seen)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_fused_batch_v1_pads_small_volumes_and_is_reproducible():
    fusion = get_preset("vf-v1-cpu").fusion
    small = vf_samples.pad_volumes([torch.rand(1, 10, 40, 24, generator=gen(0))], fusion.patch)
    assert small[0].shape == (1, 16, 40, 32) and float(small[0][0, 0, 0, 0]) == float(small[0].min())
    # vf-v1/vf-v2 pad by reflection, as PyMIC_examples' LUNA preprocessing (np.pad(img, pad, 'reflect'))
    volume = torch.rand(1, 10, 40, 24, generator=gen(0))
    assert get_preset("vf-v1").preprocess.pad_mode == "reflect"
    reflected = vf_samples.pad_volumes([volume], fusion.patch, "reflect")[0]
    np.testing.assert_array_equal(reflected.numpy(), np.pad(volume.numpy(), [(0, 0), (3, 3), (0, 0), (4, 4)], mode="reflect"))
    assert vf_samples.pad_volumes([volume], fusion.patch, "zero")[0][0, 0, 0, 0] == 0
    a = vf_samples.fused_batch(small, fusion, [gen(1), gen(2), gen(3)], gen(4))
    b = vf_samples.fused_batch(small, fusion, [gen(1), gen(2), gen(3)], gen(4))
    assert a[0].shape == (3, 1, 16, 32, 32) and a[1].dtype == torch.uint8
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_split_repeats_weighted_training_volumes_by_reference():
    volumes = [torch.full((1, 2, 2, 2), float(i)) for i in range(5)]
    task = FusionTask("data", Path("cache"), val_fraction=0.2)
    plain_train, plain_val = task._split(volumes, [1] * 5, seed=0)
    train_set, held_out = task._split(volumes, [8, 1, 1, 1, 1], seed=0)
    assert [v is w for v, w in zip(held_out, plain_val)] == [True] and len(plain_train) == 4
    expected = sum(8 if v is volumes[0] else 1 for v in plain_train)  # volume 0 is drawn 8x as often, unless held out
    assert expected == 11 and len(train_set) == expected and all(any(v is w for w in volumes) for v in train_set)


def test_fused_batch_v2_samples_do_not_depend_on_the_split():
    """v2 draws everything per sample: two processes of 2 make the samples one process of 4 makes."""
    fusion = get_preset("vf-v2-cpu").fusion
    volumes = [torch.rand(1, 24, 40, 40, generator=gen(s)) for s in range(3)]
    whole = vf_samples.fused_batch(volumes, fusion, [gen(10 + i) for i in range(4)], gen(0))
    halves = [vf_samples.fused_batch(volumes, fusion, [gen(10 + i) for i in r], gen(0)) for r in (range(2), range(2, 4))]
    assert torch.equal(whole[0], torch.cat([h[0] for h in halves])) and torch.equal(whole[1], torch.cat([h[1] for h in halves]))
    assert whole[0].min() >= 0 and whole[0].max() <= 1  # adaptive contrast maps both patches to [0, 1]


def test_fusion_metrics_perfect_and_all_background():
    label = torch.randint(0, 5, (2, 1, 4, 8, 8), dtype=torch.uint8, generator=gen(0))
    perfect = torch.nn.functional.one_hot(label[:, 0].long(), 5).permute(0, 4, 1, 2, 3).float()
    m = fusion_metrics(perfect, label, 5)
    assert m["balanced_accuracy"] == 1.0 and m["fg_dice"] == pytest.approx(1.0) and m["accuracy"] == 1.0
    background = torch.zeros(2, 5, 4, 8, 8)
    background[:, 0] = 1
    m = fusion_metrics(background, label, 5)
    assert m["balanced_accuracy"] == pytest.approx(0.2) and m["per_class_recall"][0] == 1.0


# ---------------------------------------------------------------------------------------------- networks


def test_network_choice():
    preset = get_preset("vf-v1")
    unet = apply_network_choice(preset, "unet", None).network
    assert (unet.name, unet.kwargs) == ("unet-small", {"channels": [8, 16, 32, 64]})
    swin = apply_network_choice(preset, "swinunetr", 96).network
    assert (swin.name, swin.kwargs["feature_size"]) == ("swinunetr", 96)
    assert apply_network_choice(preset, "pctnet", None).network.kwargs == {"resolution_mode": 1}
    assert apply_network_choice(preset, None, None).network == preset.network
    with pytest.raises(ConfigError, match="Did you mean 'pctnet'"):
        apply_network_choice(preset, "pct-net", None)
    with pytest.raises(ConfigError, match="--feature-size applies to --network swinunetr only"):
        apply_network_choice(preset, "pctnet", 48)
    name, kwargs = vf_task.network_spec(preset)
    assert name == "pctnet" and kwargs["input_size"] == [64, 128, 128] and kwargs["out_channels"] == 5
    # the faithful presets train one output, as the official VF configs and MIS-FM's net_run.py
    assert kwargs["multiscale_pred"] is False
    assert vf_task.network_spec(get_preset("vf-v2"))[1]["multiscale_pred"] is False
    assert vf_task.network_spec(apply_network_choice(preset, "unet", None))[1]["deep_supervision"] is False
    # deep supervision is a named choice of the loss; the network's outputs follow it
    ds = apply_overrides(preset, {"fusion.deep_supervision": "halving"})
    assert vf_task.network_spec(ds)[1]["multiscale_pred"] is True
    assert vf_task.network_spec(get_preset("vf-v1-cpu"))[1]["deep_supervision"] is True
    with pytest.raises(ConfigError, match="contradicts fusion.deep_supervision='off'"):
        vf_task.network_spec(apply_overrides(preset, {"network.kwargs": {"resolution_mode": 1, "multiscale_pred": True}}))
    with pytest.raises(ConfigError, match="Did you mean 'halving'"):
        vf_task.network_spec(apply_overrides(preset, {"fusion.deep_supervision": "halve"}))
    with pytest.raises(ConfigError, match="Did you mean 'plain'"):
        vf_task.network_spec(apply_overrides(preset, {"fusion.ce": "plan"}))
    with pytest.raises(ConfigError, match="divisible by 32"):
        vf_task.network_spec(apply_network_choice(get_preset("vf-v1-cpu"), "swinunetr", None))


SMALL_PCT = {"resolution_mode": 1, "feature_chns": [4, 8, 16, 32, 64], "window_sizes": [3, 3, 3]}


def test_one_pctnet_step_through_the_task(tmp_path, vf_phantoms, vf_cache):
    preset = apply_overrides(get_preset("vf-v1-cpu"), {
        "network.name": "pctnet", "network.kwargs": SMALL_PCT, "train.steps": 1, "train.batch_size": 2, "train.val_every": 1})
    outputs = train(FusionTask(vf_phantoms, vf_cache, val_samples=2), preset, tmp_path, torch.device("cpu"))
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    loss = next(e["loss"] for e in events if e["event"] == "progress" and "loss" in e)
    assert set(loss) == {"dice", "ce", "total"} and np.isfinite(loss["total"])
    bundle = read_bundle(outputs["bundle"])
    assert bundle.network["kwargs"]["input_size"] == [16, 32, 32] and bundle.network["kwargs"]["multiscale_pred"]
    assert len(bundle.state_dict()) == 684


# ---------------------------------------------------------------------------------------------- CLI


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_cli_pretrain_writes_checkpoints_events_run_json_and_bundle(tmp_path, vf_phantoms, vf_cache):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ssl3d", "pretrain", "--method", "vf", "--preset", "vf-v1-cpu", "--data", str(vf_phantoms),
               "--out", str(out), "--cache-dir", str(vf_cache), "--steps", "3", "--batch-size", "2", "--network", "unet"]
    proc = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert json.loads((out / "run.json").read_text())["config"]["fusion"]["deep_supervision"] == "equal"
    assert read_bundle(out / "bundle").network["kwargs"]["deep_supervision"] is True  # follows the loss
    kinds = [e["event"] for e in _events(out)]
    steps = [e for e in _events(out) if e["event"] == "progress" and "loss" in e]  # (a cache build's have phase "cache")
    assert "start" in kinds and len(steps) == 3 and kinds[-1] == "done"
    assert {e["name"] for e in _events(out) if e["event"] == "metric"} >= {"score", "balanced_accuracy"}
    assert read_bundle(out / "bundle").meta["pretext"]["method"] == "vf"
    assert f"bundle: {out / 'bundle'}" in proc.stdout


def test_torchrun_two_processes_gloo(tmp_path, vf_phantoms, vf_cache):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ssl3d", "pretrain",
               "--method", "vf", "--preset", "vf-v1-cpu", "--data", str(vf_phantoms), "--out", str(out), "--cache-dir", str(vf_cache), "--steps", "2",
               "--batch-size", "2", "--device", "cpu"]
    proc = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = next(e for e in _events(out) if e["event"] == "start")
    assert start["config"]["world_size"] == 2
    assert (out / "bundle" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- MIS-FM import


def _pctnet_state(class_num: int = 5) -> dict[str, torch.Tensor]:
    """A PyMIC-layout state dict of a small PCT-Net (windows 3, channels 4..64) at the demo input size."""
    from ssl3d.nets.pctnet import PCTNet

    torch.manual_seed(0)
    net = PCTNet(in_chns=1, class_num=class_num, input_size=[64, 128, 128], feature_chns=[4, 8, 16, 32, 64], window_sizes=[3, 3, 3])
    return net.state_dict()


@pytest.fixture(scope="module")
def misfm_state() -> dict[str, torch.Tensor]:
    return _pctnet_state()


def _save(path: Path, state: dict, prefix: str = "") -> Path:
    """A checkpoint as PyMIC's trainer writes it: numpy ``valid_pred`` and the Adam state beside the weights."""
    params = [torch.nn.Parameter(v.clone()) for v in state.values() if v.is_floating_point()][:4]
    optimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-5)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    torch.save({"iteration": 1000, "valid_pred": np.float64(0.8123), "model_state_dict": {prefix + k: v for k, v in state.items()},
                "optimizer_state_dict": optimizer.state_dict()}, path)
    return path


@pytest.mark.parametrize("prefix", ["", "module."])
def test_import_misfm_round_trip(tmp_path, misfm_state, prefix):
    file = _save(tmp_path / "pctnet_ct10k_volf.pt", misfm_state, prefix)
    report = import_misfm_weights(file, "vf-v1", tmp_path / "bundle", allow_partial=False)
    assert report.complete and len(report.matched) == 684 and not report.dropped
    bundle = read_bundle(tmp_path / "bundle")
    kwargs = bundle.network["kwargs"]
    assert bundle.network["name"] == "pctnet" and kwargs["out_channels"] == 5 and kwargs["feature_chns"] == [4, 8, 16, 32, 64]
    assert kwargs["window_sizes"] == [3, 3, 3] and kwargs["num_heads"] == [4, 8, 16] and kwargs["depths"] == [2, 2, 2]
    # one output, as MIS-FM's net_run.py and vf-v1's loss (fusion.deep_supervision off)
    assert kwargs["multiscale_pred"] is False
    provenance = bundle.meta["provenance"]
    assert provenance["assumed"]["multiscale_pred"]["from"].startswith("preset vf-v1")
    assert provenance["read_from_file"]["class_num"]["value"] == 5 and "out conv" in provenance["read_from_file"]["class_num"]["from"]
    assert set(provenance["assumed"]) >= {"resolution_mode", "input_size", "preprocessing", "dropout"} and provenance["inferred"] == {}
    assert provenance["assumed"]["input_size"]["value"] == [64, 128, 128] and provenance["steps"] == 1000
    assert bundle.meta["pretext"] == {"method": "vf", "preset": "vf-v1", "version": 1, "classes": 5,
                                      "heads": {"fusion": {"present": True, "classes": 5, "fusion_classes": True, "alphas": [0.0, 0.25, 0.5, 0.75, 1.0]}}}
    state = bundle.state_dict()
    assert all(torch.equal(state[k], v) for k, v in misfm_state.items())
    assert load_vf_bundle(bundle).network.resolution_mode == 1


def test_import_reads_class_count_and_trained_resolution_mode(tmp_path):
    state = _pctnet_state(class_num=3)
    state["embeddings.0.conv0.conv_conv.0.num_batches_tracked"] = torch.tensor(500)
    import_misfm_weights(_save(tmp_path / "c3.pt", state), "vf-v1", tmp_path / "bundle")
    bundle = read_bundle(tmp_path / "bundle")
    assert bundle.network["kwargs"]["out_channels"] == 3 and bundle.network["kwargs"]["resolution_mode"] == 0
    inferred = bundle.meta["provenance"]["inferred"]["resolution_mode"]
    assert inferred["value"] == 0 and "BatchNorm statistics" in inferred["from"]
    assert "resolution_mode" not in bundle.meta["provenance"]["read_from_file"]
    assert bundle.meta["pretext"]["heads"]["fusion"]["fusion_classes"] is False


def test_import_wrong_shapes_fail_loudly(tmp_path, misfm_state):
    state = dict(misfm_state)
    key = "pyramid_ct.convtrans_e3.conv.conv_conv.2.weight"
    state[key] = torch.zeros(32, 16, 3, 3, 3)
    with pytest.raises(WeightsError, match=f"{key}: file \\[32, 16, 3, 3, 3\\] vs network \\[32, 32, 3, 3, 3\\]"):
        import_misfm_weights(_save(tmp_path / "bad.pt", state), "vf-v1", tmp_path / "bundle")
    state = dict(misfm_state)
    state["pyramid_ct.out_conv3.conv.2.weight"] = torch.zeros(2, 32, 1, 1, 1)
    with pytest.raises(WeightsError, match="disagree on the class count"):
        import_misfm_weights(_save(tmp_path / "heads.pt", state), "vf-v1", tmp_path / "bundle")
    with pytest.raises(WeightsError, match="not a PCT-Net checkpoint"):
        import_misfm_weights(_save(tmp_path / "other.pt", {"project.weight": torch.zeros(2)}), "vf-v1", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_import_partial_needs_allow_partial(tmp_path, misfm_state, capsys):
    from ssl3d.cli import main

    partial = {k: v for k, v in misfm_state.items() if not k.startswith("pred_heads.2.")}
    file = _save(tmp_path / "partial.pt", partial)
    assert main(["import-weights", str(file), "--format", "mis-fm", "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--allow-partial" in err[0]
    assert not (tmp_path / "bundle").exists()
    assert main(["import-weights", str(file), "--format", "mis-fm", "--out", str(tmp_path / "bundle"), "--allow-partial"]) == 0
    missing = 684 - len(partial)  # the prediction head of resolution mode 2
    out = capsys.readouterr().out
    assert f"updated {len(partial)} of 684 tensors; {missing} missing" in out
    lines = out.splitlines()  # the keys --allow-partial let through are named, 10 at most
    at = lines.index(f"missing {missing} (pred_heads.2: {missing}):")
    assert all(line.startswith("  pred_heads.2.") for line in lines[at + 1:at + 11])
    assert lines[at + 11] == f"  ... and {missing - 10} more"
    match = read_bundle(tmp_path / "bundle").meta["provenance"]["match"]
    assert match["partial"] and len(match["missing"]) == missing and match["missing"][0].startswith("pred_heads.2.")
    assert main(["import-weights", str(file), "--format", "mis-fm", "--preset", "voco-v1", "--out", str(tmp_path / "b2")]) == 2
    assert capsys.readouterr().err.startswith("error: --preset voco-v1 is a 'voco' preset")
    assert main(["import-weights", str(file), "--format", "mis-fm", "--preset", "vf-v2-cpu", "--out", str(tmp_path / "b3")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --preset vf-v2-cpu is a VF preset on unet-small") and err.rstrip().endswith("vf-v1, vf-v2.")
    assert not (tmp_path / "b2").exists() and not (tmp_path / "b3").exists()
