"""Device choice before inference: the GPU-memory estimate of a bundle (a meta-device probe) and the choice
between the GPU and the CPU, with CUDA faked by monkeypatching (these tests run without a GPU)."""

from __future__ import annotations

import json

import pytest
import torch

import ssl3d.device as device_module
from ssl3d.cli import main
from ssl3d.device import CUDA_CONTEXT_BYTES, DeviceChoice, choose_device
from ssl3d.errors import ConfigError
from ssl3d.infer.memory import device_for_bundle, estimate_click_memory, estimate_segment_memory, forward_peak_bytes, model_shape
from ssl3d.io import write_volume

GB, MB = 10**9, 10**6


@pytest.fixture
def fake_gpu(monkeypatch):
    """Two fake CUDA devices whose free memory the test sets (``state["free"]``); no NVML, no context yet."""
    state = {"free": 8 * GB, "asked": []}

    def mem_get_info(index=None):
        state["asked"].append(index)
        return state["free"], 16 * GB

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(device_module, "_nvml_free_bytes", lambda index: None)
    return state


# ---------------------------------------------------------------------------------------------- estimate


@pytest.mark.parametrize("inplace, peak", [(False, 2 * 4 * 512 * 4), (True, (4 + 2) * 512 * 4)])
def test_forward_peak_counts_tensors_alive_at_once(inplace, peak):
    # conv (4 x 8^3 float32) -> ReLU: both alive (16384 B); in place, the ReLU reuses the conv's output and
    # the peak is that output plus the last conv's (2 x 8^3): 12288 B. Parameters and input are not counted.
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(inplace=inplace), torch.nn.Conv3d(4, 2, 1))
    assert forward_peak_bytes(model, torch.zeros(1, 1, 8, 8, 8)) == (peak, (1, 2, 8, 8, 8))
    assert forward_peak_bytes(model.to("meta"), torch.zeros(1, 1, 8, 8, 8, device="meta")) == (peak, (1, 2, 8, 8, 8))


def test_estimate_grows_with_window_and_sw_batch(seg_cpu_bundle):
    shape = (64, 128, 128)  # several windows per slab, so sw_batch of them run together
    small = estimate_segment_memory(seg_cpu_bundle, sw_batch=1, window=(16, 16, 16), shape=shape)
    large = estimate_segment_memory(seg_cpu_bundle, sw_batch=1, window=(32, 32, 32), shape=shape)
    batch = estimate_segment_memory(seg_cpu_bundle, sw_batch=4, window=(32, 32, 32), shape=shape)
    assert small.total < large.total < batch.total
    assert 7.8 < large.activations / small.activations < 8.2  # a convolutional network: linear in voxels
    assert 3.9 < batch.activations / large.activations < 4.1  # and in the batch
    assert estimate_segment_memory(seg_cpu_bundle, sw_batch=4, window=(32, 32, 32), shape=shape) == batch  # deterministic
    one_wide = estimate_segment_memory(seg_cpu_bundle, sw_batch=4, window=(32, 32, 32), shape=(64, 32, 32))
    assert one_wide.activations == large.activations  # a slab of one window runs it alone, whatever sw_batch


def test_estimate_in_range_for_seg_cpu_bundle(seg_cpu_bundle):
    estimate = estimate_segment_memory(seg_cpu_bundle, amp=False, shape=(32, 32, 32))  # 16^3 windows, sw_batch 2
    weights = sum(t.numel() * t.element_size() for t in seg_cpu_bundle.state_dict().values())
    classes = len(seg_cpu_bundle.meta["labels"]) + 1
    logits = 2 * classes * 16**3 * 4
    assert estimate.parameters == weights
    assert estimate_segment_memory(seg_cpu_bundle, amp=True).parameters == weights + weights // 2  # float16 copies
    assert 2 * logits < estimate.activations < 100 * logits
    assert CUDA_CONTEXT_BYTES < estimate.total < CUDA_CONTEXT_BYTES + 20 * MB
    volume = estimate_segment_memory(seg_cpu_bundle, amp=False, shape=(100, 200, 200))
    assert volume.buffers - estimate.buffers > 4 * 100 * 200 * 200  # the float32 volume lives on the device
    clicks = estimate_click_memory(seg_cpu_bundle, max_roi=3)
    assert clicks.activations > 20 * estimate_click_memory(seg_cpu_bundle, max_roi=1).activations  # ROI 3^3 windows


@pytest.mark.parametrize("name", ["phantom", "oblique_phantom"])
def test_model_shape_matches_preprocessing(name, request, seg_cpu_bundle):
    from ssl3d.data.preprocess import PreprocessConfig, preprocess

    image, _ = request.getfixturevalue(name)
    x, _ = preprocess(image, PreprocessConfig(**seg_cpu_bundle.meta["preprocessing"]))
    guess = model_shape(image, seg_cpu_bundle.meta["preprocessing"])
    assert all(0 <= g - s <= 2 for g, s in zip(guess, x.shape[2:])), (guess, tuple(x.shape[2:]))


# ---------------------------------------------------------------------------------------------- choice


def test_auto_takes_the_gpu_when_the_need_fits(fake_gpu):
    assert choose_device("auto", 2 * GB) == DeviceChoice("cuda:0", 2 * GB, 8 * GB, "")
    assert fake_gpu["asked"] == [0]


def test_auto_falls_back_to_cpu_naming_both_sizes(fake_gpu):
    fake_gpu["free"] = int(1.2 * GB)
    choice = choose_device("auto", int(3.4 * GB))
    assert (choice.device, choice.need_bytes, choice.free_bytes) == ("cpu", int(3.4 * GB), int(1.2 * GB))
    assert choice.message == "cuda:0 has 1.2 GB free but the model needs about 3.4 GB: using the CPU (slower)."
    fake_gpu["free"] = 350 * MB
    assert "350 MB free" in choose_device("AUTO", 900 * MB).message


def test_explicit_gpu_is_kept_with_a_warning(fake_gpu):
    fake_gpu["free"] = 1 * GB
    choice = choose_device("cuda:1", 3 * GB)
    assert choice.device == "cuda:1" and fake_gpu["asked"] == [1]
    assert choice.message == "cuda:1 has 1.0 GB free but the model needs about 3.0 GB; it may run out of GPU memory."
    assert choose_device("cuda", 500 * MB) == DeviceChoice("cuda:0", 500 * MB, 1 * GB, "")


def test_cpu_and_no_gpu_need_no_estimate(fake_gpu, monkeypatch):
    def never():
        raise AssertionError("estimated although no GPU is in play")

    assert choose_device("cpu", never) == DeviceChoice("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto", never) == DeviceChoice("cpu")
    assert fake_gpu["asked"] == []
    with pytest.raises(ConfigError, match="no CUDA device"):
        choose_device("cuda", 1)
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        choose_device("gpu", 1)


def test_unknown_need_or_failed_check_keeps_the_gpu(fake_gpu):
    assert choose_device("auto", None) == DeviceChoice("cuda:0")
    assert fake_gpu["asked"] == []  # nothing to compare: free memory is not read

    def broken():
        raise RuntimeError("no estimate")

    choice = choose_device("auto", broken)
    assert choice.device == "cuda:0" and "could not check the memory of cuda:0" in choice.message


def test_free_memory_from_nvml_without_context_else_cuda_with_its_cache(fake_gpu, monkeypatch):
    monkeypatch.setattr(device_module, "_nvml_free_bytes", lambda index: 5 * GB)
    assert choose_device("auto", 6 * GB).free_bytes == 5 * GB and fake_gpu["asked"] == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a context exists: CUDA, plus torch's unused cache
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index=None: 3 * GB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index=None: 1 * GB)
    assert choose_device("auto", 1 * GB).free_bytes == 10 * GB and fake_gpu["asked"] == [0]


def test_a_job_in_another_process_reads_nvml_only(fake_gpu, monkeypatch):
    """Slicer checking for its segment subprocess: no CUDA context here, this process's cache not counted."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # e.g. clicks ran on the GPU in Slicer
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index=None: 3 * GB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index=None: 1 * GB)
    monkeypatch.setattr(device_module, "_nvml_free_bytes", lambda index: 5 * GB)
    assert choose_device("auto", 6 * GB, other_process=True).device == "cpu"  # 5 GB free, not 5 + 2 cached
    monkeypatch.setattr(device_module, "_nvml_free_bytes", lambda index: None)
    choice = choose_device("cuda", 6 * GB, other_process=True)
    assert choice.device == "cuda:0" and "could not check" in choice.message and fake_gpu["asked"] == []


# ---------------------------------------------------------------------------------------------- users


def test_device_for_bundle(fake_gpu, seg_cpu_bundle, phantom):
    need = estimate_segment_memory(seg_cpu_bundle).total
    assert device_for_bundle(seg_cpu_bundle.path) == DeviceChoice("cuda:0", need, 8 * GB, "")
    fake_gpu["free"] = 100 * MB
    choice = device_for_bundle(seg_cpu_bundle, "auto", volume=phantom[0])
    assert choice.device == "cpu" and choice.need_bytes > need and "100 MB free" in choice.message
    assert device_for_bundle(seg_cpu_bundle, "cpu") == DeviceChoice("cpu")
    clicks = device_for_bundle(seg_cpu_bundle, "cuda", clicks=True)
    assert clicks.device == "cuda:0" and clicks.need_bytes == estimate_click_memory(seg_cpu_bundle).total


def test_interactive_session_auto_falls_back_to_cpu(fake_gpu, seg_cpu_bundle):
    from ssl3d.infer import InteractiveSession

    fake_gpu["free"] = 100 * MB
    session = InteractiveSession(seg_cpu_bundle, device="auto", warmup=False)
    assert session.device == torch.device("cpu") and "100 MB free" in session.device_choice.message
    assert InteractiveSession(seg_cpu_bundle, device=torch.device("cpu"), warmup=False).device_choice is None


def test_cli_segment_auto_falls_back_with_one_line(fake_gpu, tmp_path, phantom, seg_cpu_bundle, capsys):
    fake_gpu["free"] = 100 * MB
    write_volume(phantom[0], tmp_path / "ct.nii.gz")
    events = tmp_path / "events.jsonl"
    args = ["segment", "--model", str(seg_cpu_bundle.path), "--input", str(tmp_path / "ct.nii.gz"), "--output", str(tmp_path / "seg.nrrd")]
    assert main([*args, "--events", str(events)]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if "100 MB free" in line]
    assert len(notes) == 1 and notes[0].endswith("using the CPU (slower).") and any("(cpu, AMP off)" in line for line in out)
    logs = [json.loads(line) for line in events.read_text().splitlines() if '"log"' in line]
    assert [(e["message"], e["level"]) for e in logs] == [(notes[0], "info")]


def test_cli_segment_with_points_says_where_it_runs(fake_gpu, tmp_path, phantom, seg_cpu_bundle, capsys):
    fake_gpu["free"] = 100 * MB
    image = phantom[0]
    write_volume(image, tmp_path / "ct.nii.gz")
    centre = ",".join(str(v // 2) for v in image.shape[::-1])  # i,j,k of the middle voxel
    events = tmp_path / "events.jsonl"
    assert main(["segment", "--model", str(seg_cpu_bundle.path), "--input", str(tmp_path / "ct.nii.gz"), "--output",
                 str(tmp_path / "one.nrrd"), "--point", centre, "--ijk", "--events", str(events)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "100 MB free" in line]
    assert len(notes) == 1 and notes[0].endswith("using the CPU (slower).")
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds == ["start", "log", "done"]
