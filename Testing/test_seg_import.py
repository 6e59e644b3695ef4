"""import-weights --format swinunetr-seg: a MONAI SwinUNETR segmentation checkpoint as a segmentation bundle."""

import pytest
import torch

from ssl3d.bundle import read_bundle
from ssl3d.cli import main
from ssl3d.infer.segment import load_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    net = SwinUNETR(in_channels=1, out_channels=14, feature_size=12, use_v2=True)
    path = tmp_path_factory.mktemp("ckpt") / "swin_btcv.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, path)
    return path, net.state_dict()


def test_btcv_checkpoint_becomes_a_segmentation_bundle(tmp_path, checkpoint, capsys):
    path, state = checkpoint
    assert main(["import-weights", str(path), "--format", "swinunetr-seg", "--labels", "btcv", "--out", str(tmp_path / "b")]) == 0
    assert "bundle:" in capsys.readouterr().out
    bundle = read_bundle(tmp_path / "b")
    assert bundle.task == "segmentation" and len(bundle.labels) == 13
    assert bundle.labels[6][0] == "liver" and bundle.labels[1][0] == "spleen"
    assert bundle.network["kwargs"]["feature_size"] == 12 and bundle.network["kwargs"]["out_channels"] == 14
    assert "assumed" in bundle.meta["provenance"]
    model = load_model(bundle)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_bad_inputs_exit_2(tmp_path, checkpoint, capsys):
    path, _ = checkpoint
    assert main(["import-weights", str(path), "--format", "swinunetr-seg", "--labels", "1:liver", "--out", str(tmp_path / "b")]) == 2
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    assert main(["import-weights", str(tmp_path / "other.pt"), "--format", "swinunetr-seg", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
