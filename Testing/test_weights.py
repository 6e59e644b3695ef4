"""Import of released VoCo / MIS-FM checkpoints: layouts fully matched, prefixes, wrong shapes, partial loads.

Checkpoint files are built here: from a small MONAI SwinUNETR(use_v2=True) for values, and from the key
layouts recorded with the official files (fixtures) for names and shapes. Layout-only files store every
tensor as a stride-0 expansion of one zero, so a 53M-element layout takes a few kilobytes on disk.
"""

from __future__ import annotations

import copy
import json
import pickle
from functools import partial
from pathlib import Path

import pytest
import torch

from ssl3d.errors import ConfigError, WeightsError
from ssl3d.weights import (
    SWIN_ENCODER_PREFIXES,
    MatchReport,
    load_foreign_state,
    match_state,
    read_checkpoint,
    misfm_keys,
    select_keys,
    voco_keys,
)

FIXTURES = Path(__file__).parent / "data" / "fixtures"


def _layout(path: Path) -> dict[str, tuple[list[int], torch.dtype]]:
    record = json.loads(path.read_text())
    named = {**record.get("dtypes", {}), **record.get("state_dict_dtypes", {})}  # e.g. "torch.int64"
    dtypes = {key: getattr(torch, name.removeprefix("torch.")) for key, name in named.items()}
    return {key: (shape, dtypes.get(key, torch.float32)) for key, shape in record["keys"].items()}


def _zeros(layout, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + key: torch.zeros((), dtype=dtype).expand(shape) for key, (shape, dtype) in layout.items()}


def _meta(layout) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in layout.items()}


def _save(tmp_path: Path, obj, name: str = "ckpt.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def swin12():
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    return SwinUNETR(in_channels=1, out_channels=2, feature_size=12, use_v2=True)


def test_v2_ssl_layout_at_feature_size_48_is_fully_matched(tmp_path, swin12):
    layout = _layout(FIXTURES / "voco_b_ssl_keys.json")
    assert len(layout) == 145
    # the names do not depend on the feature size: MONAI's SwinUNETR(use_v2=True) encoder has exactly these
    assert list(select_keys(swin12.state_dict(), SWIN_ENCODER_PREFIXES)) == list(layout)
    path = _save(tmp_path, _zeros(layout), "VoCo_B_SSL_head.pt")
    assert path.stat().st_size < 200_000
    state, report = match_state(_meta(layout), load_foreign_state(path), voco_keys, source=path.name)
    assert len(report.matched) == 145 and report.complete
    assert report.summary().startswith("VoCo_B_SSL_head.pt: updated 145 of 145 tensors")
    assert state["swinViT.layers4.0.blocks.1.attn.relative_position_index"].dtype == torch.int64


@pytest.mark.parametrize(
    "prefix, container",
    [("", None), ("module.", None), ("backbone.", "state_dict"), ("module.backbone.", "net")],
)
def test_v2_ssl_file_loads_into_swinunetr(tmp_path, swin12, prefix, container):
    source = select_keys(swin12.state_dict(), SWIN_ENCODER_PREFIXES)
    tensors = {prefix + key: value.clone() for key, value in source.items()}
    path = _save(tmp_path, {container: tensors, "epoch": 3} if container else tensors)
    target = copy.deepcopy(swin12)
    with torch.no_grad():
        for param in target.parameters():
            param.zero_()
    wanted = select_keys(target.state_dict(), SWIN_ENCODER_PREFIXES)
    state, report = match_state(wanted, load_foreign_state(path), voco_keys)
    assert len(report.matched) == 145 and report.complete
    target.load_state_dict(state, strict=False)
    torch.testing.assert_close(target.swinViT.patch_embed.proj.weight, swin12.swinViT.patch_embed.proj.weight)
    torch.testing.assert_close(target.encoder10.layer.conv1.conv.weight, swin12.encoder10.layer.conv1.conv.weight)


@pytest.mark.parametrize("branch", ["teacher", "student"])
def test_v1_student_teacher_file_selects_the_branch(tmp_path, swin12, branch):
    source = select_keys(swin12.state_dict(), SWIN_ENCODER_PREFIXES)
    tensors = {}
    for side, scale in (("student", 1.0), ("teacher", 2.0)):
        for key, value in source.items():
            renamed = f"module.{side}.{key.replace('swinViT', 'swin_vit')}"
            tensors[renamed] = value * scale if value.is_floating_point() else value
        tensors[f"module.{side}.proj_head.0.weight"] = torch.zeros(2048, 1152)  # a projection head: dropped
    path = _save(tmp_path, tensors, "VoCo_10k.pt")
    state, report = match_state(source, load_foreign_state(path), partial(voco_keys, branch=branch))
    assert len(report.matched) == 145 and report.complete
    assert len(report.dropped) == 145 + 2
    key = "swinViT.patch_embed.proj.weight"
    torch.testing.assert_close(state[key], source[key] * (2.0 if branch == "teacher" else 1.0))


def test_right_names_wrong_shapes_fail_loudly(tmp_path, swin12):
    layout = _layout(FIXTURES / "voco_b_ssl_keys.json")  # feature size 48 into a feature size 12 network
    path = _save(tmp_path, _zeros(layout), "VoCo_B_SSL_head.pt")
    target = select_keys(swin12.state_dict(), SWIN_ENCODER_PREFIXES)
    for allow_partial in (False, True):
        message = r"wrong shape: swinViT\.patch_embed\.proj\.weight: file \[48, 1, 2, 2, 2\] vs network \[12, 1, 2, 2, 2\]"
        with pytest.raises(WeightsError, match=message):
            match_state(target, load_foreign_state(path), voco_keys, allow_partial=allow_partial, source=path.name)


def test_partial_load_is_an_error_unless_allowed(tmp_path, swin12):
    source = select_keys(swin12.state_dict(), SWIN_ENCODER_PREFIXES)
    tensors = {key: value for key, value in source.items() if not key.startswith("encoder10.")}
    foreign = load_foreign_state(_save(tmp_path, tensors))
    with pytest.raises(WeightsError, match=r"updated 143 of 145 tensors; 2 missing.*encoder10\.layer\.conv1\.conv\.weight"):
        match_state(source, foreign, voco_keys)
    state, report = match_state(source, foreign, voco_keys, allow_partial=True)
    assert len(state) == 143 and report.missing == ["encoder10.layer.conv1.conv.weight", "encoder10.layer.conv2.conv.weight"]
    with pytest.raises(WeightsError, match="not in the network"):
        match_state(select_keys(source, ("swinViT.",)), foreign, voco_keys)


def test_nothing_matched_is_always_an_error(tmp_path, swin12):
    source = select_keys(swin12.state_dict(), SWIN_ENCODER_PREFIXES)
    foreign = {f"student.{key}": value for key, value in source.items()}
    with pytest.raises(WeightsError, match="no tensor matched"):
        match_state(source, foreign, lambda key: key, allow_partial=True)  # the official strict=False trap


def test_misfm_pctnet_layout_is_fully_matched(tmp_path):
    layout = _layout(FIXTURES / "pctnet_keys_c2.json")
    path = _save(tmp_path, {"model_state_dict": _zeros(layout, "module."), "epoch": 10}, "pctnet.pt")
    state, report = match_state(_meta(layout), load_foreign_state(path), misfm_keys, source=path.name)
    assert len(report.matched) == len(layout) == 684 and report.complete


def _adam_state(tensors: dict[str, torch.Tensor], count: int = 4) -> dict:
    """An Adam ``state_dict()`` after one step over copies of the first ``count`` float tensors."""
    params = [torch.nn.Parameter(v.detach().clone()) for v in tensors.values() if v.is_floating_point()][:count]
    optimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-5)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    return optimizer.state_dict()


def test_pymic_training_checkpoint_with_numpy_scalars_and_optimizer_state(tmp_path):
    import numpy as np

    layout = _layout(FIXTURES / "pctnet_keys_c2.json")
    weights = _zeros(layout)
    checkpoint = {"iteration": 6000, "valid_pred": np.float64(0.9180), "model_state_dict": weights,
                  "optimizer_state_dict": _adam_state(weights)}  # what PyMIC's trainer saves
    path = _save(tmp_path, checkpoint, "pctnet_best.pt")
    foreign = load_foreign_state(path)
    assert len(foreign) == 684 and not any(key.startswith(("state.", "param_groups")) for key in foreign)
    whole = read_checkpoint(path)
    assert isinstance(whole["valid_pred"], np.float64) and whole["valid_pred"] == 0.9180
    assert whole["optimizer_state_dict"]["param_groups"][0]["lr"] == 1e-3


def test_checkpoint_pickled_under_numpy_1_names(tmp_path):
    import io

    import numpy as np

    buffer = io.BytesIO()  # the legacy format is one plain pickle: rename its globals as numpy 1.x wrote them
    torch.save({"valid_pred": np.float64(0.5), "dice": np.arange(3.0), "model_state_dict": {"w": torch.ones(2)}}, buffer,
               _use_new_zipfile_serialization=False)
    raw = buffer.getvalue()
    assert b"numpy._core.multiarray" in raw
    (tmp_path / "old.pt").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    checkpoint = read_checkpoint(tmp_path / "old.pt")
    assert checkpoint["valid_pred"] == 0.5 and checkpoint["dice"].tolist() == [0.0, 1.0, 2.0]
    assert list(load_foreign_state(tmp_path / "old.pt")) == ["w"]


def test_voco_training_checkpoints_load(tmp_path, swin12):
    import numpy as np

    source = select_keys(swin12.state_dict(), SWIN_ENCODER_PREFIXES)
    model = {f"module.{key}": value for key, value in source.items()}
    with_state = {"global_step": np.int64(100), "best": np.float32(0.5), "state_dict": model, "optimizer": _adam_state(source)}
    # voco_train.py's model_current_epoch.pt pickles the optimizer object itself: read as inert data
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = torch.optim.AdamW(params, lr=1e-4, amsgrad=True)
    params[0].grad = torch.ones(3)
    optimizer.step()
    whole_object = {"global_step": 100, "state_dict": model, "optimizer": optimizer}
    for name, checkpoint in (("with_state.pt", with_state), ("model_current_epoch.pt", whole_object)):
        path = _save(tmp_path, checkpoint, name)
        _, report = match_state(source, load_foreign_state(path), voco_keys, source=name)
        assert report.complete and len(report.matched) == 145


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_unreadable_files_raise_weights_error_naming_the_file(tmp_path):
    with pytest.raises(WeightsError, match="missing.pt: no such checkpoint file"):
        load_foreign_state(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pt: cannot be read"):
        load_foreign_state(tmp_path / "garbage.pt")
    with open(tmp_path / "code.pt", "wb") as handle:
        pickle.dump({"w": _Payload()}, handle, protocol=2)
    with pytest.raises(WeightsError, match=r"code.pt: cannot be read as a weights-only .*refused global (builtins\.)?print") as caught:
        load_foreign_state(tmp_path / "code.pt")  # the cause, not torch's generic first line
    assert "\n" not in str(caught.value)
    assert "weights_only" not in str(caught.value) and "safe_globals" not in str(caught.value)  # no unsafe advice
    torch.save({"state_dict": {"w": torch.zeros(2)}, "model": torch.nn.Linear(2, 2)}, tmp_path / "whole.pt")
    with pytest.raises(WeightsError, match=r"whole.pt: .*refused global torch\.nn\.modules\.linear\.Linear") as caught:
        load_foreign_state(tmp_path / "whole.pt")  # a whole pickled model
    assert "weights_only" not in str(caught.value) and "safe_globals" not in str(caught.value)
    with pytest.raises(WeightsError, match="empty.pt: holds no tensors"):
        load_foreign_state(_save(tmp_path, {"epoch": 1}, "empty.pt"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_code_pickle_of_any_protocol_names_what_it_would_import_and_runs_nothing(tmp_path, protocol, recwarn):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=protocol))
    with pytest.raises(WeightsError) as caught:
        load_foreign_state(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot be read as a weights-only torch checkpoint (") and "\n" not in message
    name = f"{os.system.__module__}.system"  # posix.system, nt.system on Windows
    assert (f"refused global {name}" in message) or (f"the file would import {name}" in message), message
    assert not (tmp_path / "ran").exists() and not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_report_details_name_the_keys():
    report = MatchReport("f.pt", matched=["a.b.c"], missing=[f"head.{i // 8}.w{i}" for i in range(12)],
                         unexpected=["extra.x"], mismatched=[("a.b.d", (2,), (3,))])
    lines = report.details(limit=10)
    assert lines[0] == "missing 12 (head.0: 8, head.1: 4):" and lines[1] == "  head.0.w0" and lines[11] == "  ... and 2 more"
    assert "unexpected 1 (extra.x: 1):" in lines and "  a.b.d: file [2] vs network [3]" in lines
    assert MatchReport("f.pt", matched=["a"]).details() == []


def test_cli_import_names_the_missing_keys(tmp_path, swin12, capsys):
    import numpy as np

    from ssl3d.cli import main
    from ssl3d.events import read_events

    source = select_keys(swin12.state_dict(), SWIN_ENCODER_PREFIXES)
    kept = {key: value for key, value in source.items() if not key.startswith("encoder10.")}
    path = _save(tmp_path, {"epoch": np.int64(3), "state_dict": kept, "optimizer": _adam_state(kept)}, "voco.pt")
    assert main(["import-weights", str(path), "--format", "voco", "--out", str(tmp_path / "b"), "--allow-partial"]) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index("missing 2 (encoder10.layer: 2):")
    assert out[at + 1:at + 3] == ["  encoder10.layer.conv1.conv.weight", "  encoder10.layer.conv2.conv.weight"]
    events_file = tmp_path / "events.jsonl"
    assert main(["import-weights", str(path), "--format", "voco", "--out", str(tmp_path / "c"), "--allow-partial",
                 "--events", str(events_file)]) == 0
    events = read_events(events_file)
    assert [e["event"] for e in (events[0], events[-1])] == ["start", "done"]
    assert events[-1]["outputs"] == {"bundle": str(tmp_path / "c")}
    assert "missing 2 (encoder10.layer: 2):" in [e["message"] for e in events if e["event"] == "log"]


def test_voco_key_map():
    assert voco_keys("module.teacher.swin_vit.patch_embed.proj.weight") == "swinViT.patch_embed.proj.weight"
    assert voco_keys("student.backbone.encoder1.layer.conv1.conv.weight") is None
    assert voco_keys("student.backbone.encoder1.layer.conv1.conv.weight", branch="student") == "encoder1.layer.conv1.conv.weight"
    assert voco_keys("decoder5.transp_conv.conv.weight") is None
    assert misfm_keys("module.pyramid_ct.out_conv2.conv.2.weight") == "pyramid_ct.out_conv2.conv.2.weight"
    with pytest.raises(ConfigError, match="branch"):
        voco_keys("swinViT.x", branch="ema")
