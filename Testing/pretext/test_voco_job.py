"""VoCo as a job: CPU pretraining on phantoms, the CLI, torchrun, resume, v2, the Swin path, the bundle
loader, and the import of released checkpoints (files built here from MONAI SwinUNETR key names and shapes).
"""

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
from ssl3d.cli import main
from ssl3d.config import apply_overrides, get_preset
from ssl3d.errors import BundleError, Cancelled, ConfigError, InputError, WeightsError
from ssl3d.events import read_events
from ssl3d.pretext.voco import voco_v1_loss
from ssl3d.pretext.voco_bundle import (
    VoCoScorer,
    build_backbone,
    load_voco_bundle,
    position_accuracy,
    voco_backbone_state,
)
from ssl3d.pretext.voco_task import VoCoTask, apply_network_choice
from ssl3d.weights.voco import import_voco_weights
from ssl3d.train.checkpoint import load_checkpoint
from ssl3d.train.loop import train
from ssl3d.weights import SWIN_ENCODER_PREFIXES, select_keys

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _context(preset, run_dir: Path):
    from ssl3d.train.distributed import DistInfo
    from ssl3d.train.logger import RunLogger
    from ssl3d.train.loop import TrainContext

    logger = RunLogger(run_dir, None, True, preset.train.steps, tensorboard=False)
    return TrainContext(preset, run_dir, torch.device("cpu"), DistInfo(), logger, preset.train.seed)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ----------------------------------------------------------------------------------------------- CPU run


def test_cpu_run_loss_falls_and_held_out_positions_are_learned(voco_cpu_run):
    totals = [loss["total"] for loss in voco_cpu_run.losses]
    assert len(totals) == 40 and set(voco_cpu_run.losses[0]) == {"pos", "neg", "reg", "total"}
    assert np.mean(totals[-10:]) < 0.9 * np.mean(totals[:5])  # the first steps also move the random teacher
    result = position_accuracy(voco_cpu_run.bundle, voco_cpu_run.held_out, n_crops=200, seed=1)
    assert result["n"] >= 200 and result["chance"] == 1 / 16
    assert result["top1"] >= result["chance"] + 0.15, result


def test_bundle_holds_student_teacher_and_the_backbone_to_fine_tune(voco_cpu_bundle):
    from ssl3d.nets.builders import build_network

    bundle = read_bundle(voco_cpu_bundle)
    pretext = bundle.meta["pretext"]
    assert bundle.task == "pretext" and pretext["method"] == "voco" and pretext["preset"] == "voco-v1-cpu"
    assert pretext["grid"] == 4 and pretext["heads"]["teacher"] == "teacher.head."
    assert pretext["backbone"]["prefix"] == "teacher.backbone.encoder."  # v1: the EMA teacher, as released
    assert bundle.meta["preprocessing"]["resize"] == [64, 64, 32]
    state = bundle.state_dict()
    assert {key.split(".")[0] + "." + key.split(".")[1] for key in state} == {
        "student.backbone", "student.head", "teacher.backbone", "teacher.head"}
    network, backbone = voco_backbone_state(bundle)
    net = build_network(network["name"], **network["kwargs"])
    net.load_state_dict(backbone)  # strict: every encoder tensor is there
    assert not torch.equal(state["student.backbone.encoder.levels.0.0.weight"], backbone["levels.0.0.weight"])


def test_scorer_api(voco_cpu_run, tmp_path):
    scorer = load_voco_bundle(voco_cpu_run.bundle)
    volumes = scorer.load_volumes(voco_cpu_run.held_out)
    assert len(volumes) == 4 and volumes[0].shape == (1, 32, 64, 64)
    scores = scorer.scores(volumes[0], [[8, 8], [55, 40]])  # (n, grid²)
    assert scores.shape == (2, 16) and float(scores.min()) >= 0 and float(scores.max()) <= 1
    assert scorer.scores(volumes[:2], np.array([[[8, 8]], [[30, 30]]])).shape == (2, 1, 16)
    with pytest.raises(InputError, match=r"centers must lie in \[8, 56\)"):
        scorer.scores(volumes[0], [[7, 8]])
    with pytest.raises(InputError, match="integer"):
        scorer.scores(volumes[0], [[8.5, 8.0]])
    by_path = position_accuracy(scorer, voco_cpu_run.held_out, n_crops=32, seed=3)
    assert by_path == position_accuracy(voco_cpu_run.bundle, volumes, n_crops=32, seed=3)


def test_one_step_official_ema_order_and_no_teacher_gradient(voco_cpu_run, tmp_path):
    preset = apply_overrides(get_preset("voco-v1-cpu"), {"train.batch_size": 2})
    ctx = _context(preset, tmp_path)
    task = VoCoTask(voco_cpu_run.data, voco_cpu_run.run_dir.parent / "cache")  # the session run's cache
    task.setup(ctx)
    net = task.net
    teacher_ids = {id(p) for p in net.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in task.parameters()}
    assert not any(p.requires_grad for p in net.teacher.parameters())
    batch = task.batch(ctx, 3, range(0, 2))
    crops = batch.samples.crops.clone()
    assert torch.equal(task.batch(ctx, 3, range(0, 2)).samples.crops, crops)  # draws from (seed, step, index)
    second = task.batch(ctx, 3, range(1, 2)).samples.crops  # what rank 1 of 2 would cut
    assert torch.equal(second[:4], crops[4:8]) and torch.equal(second[4:], crops[8 + 16 :])
    teacher0 = {k: v.clone() for k, v in net.teacher.state_dict().items()}
    student0 = {k: v.clone() for k, v in net.student.state_dict().items()}
    batch = task.batch(ctx, 3, range(0, 2))
    losses = task.losses(ctx, batch, 3)
    for key, value in net.teacher.state_dict().items():  # EMA 0.9 of the pre-step student
        torch.testing.assert_close(value, 0.9 * teacher0[key] + 0.1 * student0[key], rtol=1e-6, atol=1e-7)
    with torch.no_grad():  # the teacher that scored this step is the updated one (official order)
        _, s = net.student(batch.samples.crops)
        t = net.teacher(batch.samples.crops)[1]
    expected = voco_v1_loss(s[:8].reshape(2, 4, -1), t[:8].reshape(2, 4, -1), s[8:].reshape(2, 16, -1), t[8:].reshape(2, 16, -1), batch.samples.labels)
    torch.testing.assert_close(losses["total"].detach(), expected["total"])
    losses["total"].backward()
    assert all(p.grad is None for p in net.teacher.parameters())
    assert all(p.grad is not None for p in task.parameters())
    ctx.logger.close()


def test_v1_bounded_base_cache_gives_the_losses_of_an_unbounded_one(voco_cpu_run, tmp_path):
    """8 volumes, a base-crop budget of 2 volumes: the cache never holds more, the losses do not change."""
    preset = apply_overrides(get_preset("voco-v1-cpu"), {"train.batch_size": 2})
    per_volume = 16 * 16**3 * 4  # 4x4 base crops of 16³ float32
    losses = {}
    for budget in (2 * per_volume, None):
        ctx = _context(preset, tmp_path / str(budget))
        task = VoCoTask(voco_cpu_run.data, voco_cpu_run.run_dir.parent / "cache", base_cache_bytes=budget)
        task.setup(ctx)
        student, teacher = dict(task.net.student.named_parameters()), dict(task.net.teacher.named_parameters())
        weights = [k for k in student if student[k].ndim >= 2]  # the randomly initialised tensors
        assert student.keys() == teacher.keys() and weights
        assert not any(torch.equal(student[k], teacher[k]) for k in weights)  # its own init, not a deepcopy
        assert len(task.volumes) == 8 and all(v.device.type == "cpu" for v in task.volumes)
        losses[budget] = []
        for step in range(5):  # 10 samples: every volume once, two of them twice
            losses[budget].append(task.losses(ctx, task.batch(ctx, step, range(2)), step)["total"].detach())
            if budget is not None:
                assert len(task.base_cache) <= 2 and task.base_cache.nbytes <= budget
        ctx.logger.close()
    assert len(task.base_cache) == 8  # the default budget holds all of them
    assert all(torch.equal(a, b) for a, b in zip(losses[2 * per_volume], losses[None])), losses


def test_datalist_weights_repeat_volumes_in_each_epoch(voco_cpu_run, tmp_path):
    """A datalist weight N draws a volume N times per epoch (VoCo v2's ConcatDataset repeats); weight 1
    everywhere keeps the unweighted order."""
    preset = get_preset("voco-v1-cpu")
    images = sorted(Path(voco_cpu_run.data).glob("*.nii.gz"))
    orders = {}
    for name, first in (("plain", 1), ("weighted", 3)):
        datalist = tmp_path / f"{name}.json"
        datalist.write_text(json.dumps({"training": [{"image": str(p), "weight": first if i == 0 else 1} for i, p in enumerate(images)]}))
        ctx = _context(preset, tmp_path / name)
        task = VoCoTask(datalist, voco_cpu_run.run_dir.parent / "cache")
        task.setup_samples(ctx)
        per_epoch = len(images) + first - 1
        orders[name] = [task._volume_index(ctx, 0, i) for i in range(2 * per_epoch)]
        ctx.logger.close()
        for epoch in range(2):
            drawn = orders[name][epoch * per_epoch:(epoch + 1) * per_epoch]
            assert sorted(drawn) == sorted([0] * first + list(range(1, len(images))))
    ctx = _context(preset, tmp_path / "folder")
    task = VoCoTask(voco_cpu_run.data, voco_cpu_run.run_dir.parent / "cache")
    task.setup_samples(ctx)
    assert orders["plain"] == [task._volume_index(ctx, 0, i) for i in range(2 * len(images))]
    ctx.logger.close()


def test_v2_task_drops_whole_student_rows_and_moves_only_the_teacher_head(voco_cpu_run, tmp_path):
    preset = apply_overrides(get_preset("voco-v2-cpu"), {"train.batch_size": 2})
    ctx = _context(preset, tmp_path)
    task = VoCoTask(voco_cpu_run.held_out, tmp_path / "cache")
    task.setup(ctx)
    net = task.net
    assert not hasattr(net.teacher, "backbone") and not list(net.teacher.buffers())
    seen = {}
    hooks = [
        net.student.backbone.register_forward_hook(lambda m, i, o: seen.__setitem__("features", o.detach().clone())),
        net.student.head.register_forward_pre_hook(lambda m, i: seen.__setitem__("student", i[0].detach().clone())),
        net.teacher.head.register_forward_pre_hook(lambda m, i: seen.__setitem__("teacher", i[0].detach().clone())),
    ]
    head0 = {k: v.clone() for k, v in net.teacher.head.state_dict().items()}
    student0 = {k: v.clone() for k, v in net.student.state_dict().items()}
    task.losses(ctx, task.batch(ctx, 0, range(2)), 0)
    for hook in hooks:
        hook.remove()
    features, student = seen["features"], seen["student"]
    dropped = (student == 0).all(1)  # 2 volumes x (4 random + 9 base) = 26 crop rows, p = 0.2
    assert features.shape[0] == 26 and 0 < int(dropped.sum()) < 26
    torch.testing.assert_close(student[~dropped], features[~dropped] / 0.8, rtol=1e-6, atol=1e-7)
    assert torch.equal(seen["teacher"], features)  # the teacher head sees every row, undropped
    for key, value in net.teacher.head.state_dict().items():  # EMA 0.9 of the student head
        torch.testing.assert_close(value, 0.9 * head0[key] + 0.1 * student0["head." + key], rtol=1e-6, atol=1e-7)
    assert all(torch.equal(value, student0[key]) for key, value in net.student.state_dict().items())
    ctx.logger.close()


# ----------------------------------------------------------------------------------------------- CLI, DDP, resume


def test_cli_pretrain_writes_the_run_folder_and_resume_continues(voco_cpu_run, tmp_path, capsys):
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ["pretrain", "--method", "voco", "--preset", "voco-v1-cpu", "--data", str(voco_cpu_run.held_out),
            "--out", str(run), "--batch-size", "2", "--cache-dir", str(cache)]
    result = subprocess.run([sys.executable, "-m", "ssl3d", *args, "--steps", "2"], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"bundle: {run / 'bundle'}" in result.stdout
    for name in ("checkpoints/last.pt", "events.jsonl", "run.json", "config.yaml", "bundle/bundle.json", "bundle/model.safetensors"):
        assert (run / name).is_file(), name
    assert json.loads((run / "run.json").read_text())["config"]["name"] == "voco-v1-cpu"
    assert main([*args, "--steps", "3", "--resume"]) == 0
    events = read_events(run / "events.jsonl")
    assert [e["step"] for e in events if e["event"] == "progress" and "loss" in e] == [1, 2, 3]
    assert any(e["event"] == "log" and e["message"] == "resumed from step 2" for e in events)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert read_bundle(run / "bundle").meta["provenance"]["steps"] == 3


def test_torchrun_two_processes_with_gloo_write_one_bundle(voco_cpu_run, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ssl3d", "pretrain",
               "--method", "voco", "--preset", "voco-v1-cpu", "--data", str(voco_cpu_run.held_out), "--out", str(run),
               "--steps", "2", "--batch-size", "1", "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(command, env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    events = read_events(run / "events.jsonl")
    assert [e["event"] for e in events].count("done") == 1
    assert next(e for e in events if e["event"] == "start")["config"]["world_size"] == 2
    bundle = read_bundle(run / "bundle")
    assert bundle.meta["provenance"]["world_size"] == 2 and bundle.meta["provenance"]["steps"] == 2
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("bundle")) == ["bundle"]


class _CancelAfterStep(VoCoTask):
    """Asks the loop to stop (the ``cancel`` file) after the second step, like a killed job."""

    def after_forward(self, ctx, step):
        if step == 1:
            (ctx.run_dir / "cancel").write_text("")


def test_v2_cpu_runs_and_resumes_exactly(voco_cpu_run, tmp_path):
    preset = apply_overrides(get_preset("voco-v2-cpu"), {"train.steps": 4, "train.batch_size": 2, "train.checkpoint_every": 10})
    data, cache = voco_cpu_run.held_out, tmp_path / "cache"
    full = train(VoCoTask(data, cache), preset, tmp_path / "full", torch.device("cpu"))
    with pytest.raises(Cancelled):
        train(_CancelAfterStep(data, cache), preset, tmp_path / "cut", torch.device("cpu"))
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["step"] == 2
    train(VoCoTask(data, cache), preset, tmp_path / "cut", torch.device("cpu"), resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["modules"]["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["modules"]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # window, crop and dropout draws replayed
    losses = [e["loss"] for e in read_events(tmp_path / "full" / "events.jsonl") if e["event"] == "progress" and "loss" in e]
    assert set(losses[0]) == {"intra", "inter", "reg", "total"} and all(np.isfinite(x["total"]) for x in losses)
    meta = read_bundle(full["bundle"]).meta
    assert meta["pretext"]["backbone"]["prefix"] == "student.backbone.encoder." and meta["pretext"]["grid"] == 3
    assert not any(key.startswith("teacher.backbone") for key in read_bundle(full["bundle"]).state_dict())
    assert position_accuracy(full["bundle"], data, n_crops=16)["chance"] == 1 / 9


def test_swin_path_one_step_at_64_cubed(tmp_path):
    """SwinUNETR-v2 (feature size 12, window 4) on 64³ crops, grid 2, one random crop: 5 crops per step."""
    from monai.networks.nets import SwinUNETR

    from ssl3d.data.phantoms import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "data", [5]) / "imagesTr"
    sizes = {"voco.grid": 2, "voco.base_crop": 64, "voco.random_crop": 64, "voco.crop_out": 64, "voco.num_random": 1,
             "voco.head_hidden": 64, "voco.head_out": 64, "preprocess.resize": [128, 128, 64], "train.steps": 1, "train.batch_size": 1}
    preset = apply_network_choice(apply_overrides(get_preset("voco-v1-cpu"), sizes), "swinunetr", 12)
    assert preset.network.kwargs == {"feature_size": 12, "use_v2": True, "use_checkpoint": True, "merging": "v1.3"}  # official checkpointing
    preset.network.kwargs["window_size"] = 4  # attention cost on 2 cores; the key names stay SwinUNETR's
    backbone = build_backbone(preset.network)[0]  # the encoder-only VoCo path keeps MONAI's checkpointing on
    assert all(block.use_checkpoint for layer in backbone.net.swinViT.layers1 for block in layer.blocks)
    outputs = train(VoCoTask(data, tmp_path / "cache"), preset, tmp_path / "run", torch.device("cpu"))
    network, state = voco_backbone_state(outputs["bundle"])
    assert network["name"] == "swinunetr" and network["kwargs"]["feature_size"] == 12 and len(state) == 145
    net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, use_v2=True, window_size=4)
    assert set(select_keys(net.state_dict(), SWIN_ENCODER_PREFIXES)) == set(state)  # the released layout's names
    assert not net.load_state_dict(state, strict=False).unexpected_keys


# ----------------------------------------------------------------------------------------------- network choice


def test_network_choice():
    v1, v2 = get_preset("voco-v1"), get_preset("voco-v2")
    assert apply_network_choice(v1, "swin-l").network.kwargs == {"feature_size": 96, "use_v2": True, "use_checkpoint": True, "merging": "v1.3"}
    assert apply_network_choice(v1, "swinunetr", 24).network.kwargs["feature_size"] == 24
    assert apply_network_choice(v1, None, 192).network.kwargs["feature_size"] == 192
    assert apply_network_choice(get_preset("voco-v1-cpu"), "cnn-small").network.name == "cnn-small"
    chest = apply_network_choice(v2, None, None, "chest").preprocess
    assert chest.spacing == (1.25, 1.25, 5.0) and chest.intensity == "window:-1000,500" and chest.pad_to == (192, 192, 64)
    assert chest.foreground_threshold == 0.0  # official CropForegroundd (> 0) after the window
    resize = apply_network_choice(v2, None, None, "resize").preprocess  # official: abdomen steps, pad to 64³, then resize
    assert (resize.spacing, resize.intensity, resize.foreground_threshold) == ((1.5, 1.5, 1.5), "window:-175,250", 0.0)
    assert (resize.pad_to, resize.resize, resize.resize_mode, resize.align_corners) == ((64, 64, 64), (192, 192, 64), "trilinear", True)
    assert apply_network_choice(get_preset("voco-v2-cpu"), None, None, "resize").preprocess.pad_to == (16, 16, 16)
    assert apply_network_choice(apply_network_choice(v2, None, None, "chest"), None, None, "abdomen").preprocess == v2.preprocess
    assert apply_network_choice(get_preset("voco-v2-cpu"), None, None, "chest").preprocess.spacing == (5.0, 5.0, 20.0)
    assert v1.network.kwargs == {"feature_size": 48, "use_v2": True, "use_checkpoint": True, "merging": "v1.3"}  # the input is not changed


@pytest.mark.parametrize(
    "preset, args, message",
    [
        ("voco-v1", ("swin-x", None, None), r"unknown --network 'swin-x'. Did you mean 'swin-[bhl]'\?"),
        ("voco-v1-cpu", (None, 48, None), "--feature-size applies to Swin networks"),
        ("voco-v1", ("swin-b", 96, None), "contradicts --network swin-b"),
        ("voco-v1", (None, 50, None), r"positive multiple of 12 .*got 50\."),
        ("voco-v1", (None, None, "chest"), "voco-v2 presets only; preset 'voco-v1' is VoCo v1"),
        ("voco-v2", (None, None, "lung"), "unknown --v2-pipeline 'lung'"),
        ("voco-v1-cpu", ("swin-b", None, None), "multiple of 32, got voco.crop_out 16"),
        ("vf-v1", (None, None, None), "not a VoCo preset"),
    ],
)
def test_ill_network_choice(preset, args, message):
    with pytest.raises(ConfigError, match=message):
        apply_network_choice(get_preset(preset), *args)


# ----------------------------------------------------------------------------------------------- import-weights


@pytest.fixture(scope="module")
def swin12():
    from monai.networks.nets import SwinUNETR

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, use_v2=True)
    return select_keys(net.state_dict(), SWIN_ENCODER_PREFIXES)  # the 145 tensors VoCo releases


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("branch, scale, layout", [
    ("teacher", 2.0, "module.{side}.{key}"),  # VoCo_10k.pt: DataParallel prefix, swin_vit
    ("student", 1.0, "{side}.backbone.{key}"),
])
def test_import_v1_student_teacher_file(tmp_path, swin12, branch, scale, layout):
    tensors = {}
    for side, factor in (("student", 1.0), ("teacher", 2.0)):
        for key, value in swin12.items():
            name = layout.format(side=side, key=key.replace("swinViT", "swin_vit"))
            tensors[name] = value * factor if value.is_floating_point() else value
        tensors[layout.format(side=side, key="proj_head.0.weight")] = torch.zeros(8, 288)  # a head: dropped
    path = _save(tmp_path / "VoCo_10k.pt", {"state_dict": tensors, "global_step": 250000})
    report = import_voco_weights(path, "voco-v1", tmp_path / "bundle", branch, allow_partial=False)
    assert len(report.matched) == 145 and report.complete and len(report.dropped) == 145 + 2
    bundle = read_bundle(tmp_path / "bundle")
    assert bundle.meta["pretext"]["heads"] is None and bundle.meta["provenance"]["branch"] == branch
    network, state = voco_backbone_state(bundle)
    assert network == {"name": "swinunetr", "kwargs": {"feature_size": 12, "use_v2": True, "use_checkpoint": True, "in_channels": 1, "merging": "v1.3"}}
    torch.testing.assert_close(state["swinViT.patch_embed.proj.weight"], swin12["swinViT.patch_embed.proj.weight"] * scale)
    assert state["swinViT.layers1.0.blocks.0.attn.relative_position_index"].dtype == torch.int64


@pytest.mark.parametrize("prefix", ["", "module.backbone."])
def test_import_v2_ssl_head_file(tmp_path, swin12, prefix):
    path = _save(tmp_path / "VoCo_B_SSL_head.pt", {prefix + key: value for key, value in swin12.items()})
    assert main(["import-weights", "--format", "voco", str(path), "--preset", "voco-v2", "--out", str(tmp_path / "b")]) == 0
    bundle = read_bundle(tmp_path / "b")
    match = bundle.meta["provenance"]["match"]
    assert match["matched"] == 145 and match["missing"] == [] and match["summary"].startswith("VoCo_B_SSL_head.pt: updated 145 of 145")
    assumed = bundle.meta["provenance"]["assumed"]
    assert assumed["preprocessing"]["value"]["spacing"] == [1.5, 1.5, 1.5] and "Large-Scale-Medical" in assumed["preprocessing"]["from"]
    assert assumed["feature_size"]["value"] == 12 and "patch_embed" in assumed["feature_size"]["from"]
    state = voco_backbone_state(bundle)[1]
    assert state.keys() == swin12.keys() and all(torch.equal(state[k], swin12[k]) for k in state)
    with pytest.raises(BundleError, match="holds no VoCo heads"):
        load_voco_bundle(bundle)


def test_import_wrong_shapes_fail_loudly(tmp_path, swin12, capsys):
    tensors = dict(swin12)
    tensors["encoder10.layer.conv1.conv.weight"] = torch.zeros(12, 12, 3, 3, 3)  # network: (192, 192, 3, 3, 3)
    path = _save(tmp_path / "bad.pt", tensors)
    with pytest.raises(WeightsError, match=r"wrong shape: encoder10\.layer\.conv1\.conv\.weight: file \[12, 12, 3, 3, 3\]"):
        import_voco_weights(path, "voco-v2", tmp_path / "api", "teacher", allow_partial=True)
    assert main(["import-weights", "--format", "voco", str(path), "--out", str(tmp_path / "cli"), "--allow-partial"]) == 2
    assert "wrong shape" in _one_error_line(capsys)
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()


def test_import_partial_is_an_error_unless_allowed(tmp_path, swin12, capsys):
    path = _save(tmp_path / "part.pt", {k: v for k, v in swin12.items() if not k.startswith("encoder10.")})
    with pytest.raises(WeightsError, match=r"updated 143 of 145 tensors; 2 missing.*--allow-partial"):
        import_voco_weights(path, "voco-v1", tmp_path / "api", "teacher", allow_partial=False)
    assert main(["import-weights", "--format", "voco", str(path), "--out", str(tmp_path / "strict")]) == 2
    assert "143 of 145" in _one_error_line(capsys) and not (tmp_path / "strict").exists()
    assert main(["import-weights", "--format", "voco", str(path), "--out", str(tmp_path / "b"), "--allow-partial"]) == 0
    assert "updated 143 of 145 tensors" in capsys.readouterr().out
    assert read_bundle(tmp_path / "b").meta["provenance"]["match"]["missing"] == [
        "encoder10.layer.conv1.conv.weight", "encoder10.layer.conv2.conv.weight"]
    assert len(voco_backbone_state(tmp_path / "b")[1]) == 145  # the two missing keep their (seeded) init


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "voco-v1-cpu"], "needs a Swin VoCo preset"),
        (["--preset", "voco-v3"], "unknown preset 'voco-v3'. Did you mean"),
        (["--file-missing"], "no such checkpoint file"),
        (["--out-is-folder"], "exists and is not a bundle folder"),
        (["--not-a-checkpoint"], "cannot be read as a weights-only torch checkpoint"),
    ],
)
def test_ill_import_inputs_exit_2_with_one_line(tmp_path, swin12, capsys, extra, message):
    path = _save(tmp_path / "ok.pt", swin12)
    out = tmp_path / "out"
    if extra == ["--file-missing"]:
        path, extra = tmp_path / "missing.pt", []
    elif extra == ["--out-is-folder"]:
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
        extra = []
    elif extra == ["--not-a-checkpoint"]:
        path.write_text("not a checkpoint")
        extra = []
    assert main(["import-weights", "--format", "voco", str(path), "--out", str(out), *extra]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists() or [p.name for p in out.iterdir()] == ["notes.txt"]


def test_scorer_needs_a_bundle_for_paths(voco_cpu_bundle):
    scorer = load_voco_bundle(voco_cpu_bundle)
    bare = VoCoScorer(scorer.net, scorer.spec, 1)
    with pytest.raises(InputError, match="no preprocessing"):
        bare.accuracy("anything", 4)
