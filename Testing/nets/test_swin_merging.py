"""The Swin encoder VoCo's weights were trained in (MONAI 1.3.0's 3-D PatchMerging), against the fixture
``voco_swin_monai130_fs12.npz`` made by the official VoCo ``Swin`` under MONAI 1.3.0 (fixtures README §7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl3d.bundle import read_bundle
from ssl3d.nets.builders import build_network
from ssl3d.nets.swin_merging import PatchMergingV13
from ssl3d.pretext.voco import swinunetr_encoder_outputs
from ssl3d.pretext.voco_bundle import build_backbone, voco_backbone_state
from ssl3d.weights.swinunetr_seg import import_swinunetr_segmentation
from ssl3d.weights.voco import import_voco_weights

FIXTURE = Path(__file__).parents[1] / "data" / "fixtures" / "voco_swin_monai130_fs12.npz"


@pytest.fixture(scope="module")
def fixture() -> dict:
    data = np.load(FIXTURE)
    return {name: data[name] for name in data.files}


def fixture_weights(fx: dict) -> dict[str, torch.Tensor]:
    """The README §7 generator: per entry ``idx`` a Generator seeded ``weight_seed + idx``; int buffers skipped."""
    shapes = json.loads(str(fx["shapes"]))
    state = {}
    for idx, (key, shape) in enumerate(zip(fx["keys"].tolist(), shapes)):
        if key.endswith("relative_position_index") or key.endswith("num_batches_tracked"):
            continue
        gen = torch.Generator().manual_seed(int(fx["weight_seed"]) + idx)
        if key.endswith("running_var"):
            value = 0.75 + 0.5 * torch.rand(shape, generator=gen)
        elif key.endswith("running_mean"):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("relative_position_bias_table"):
            value = 0.02 * torch.randn(shape, generator=gen)
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=gen) / float(np.sqrt(np.prod(shape[1:])))
        elif key.endswith("bias"):
            value = 0.01 * torch.randn(shape, generator=gen)
        else:
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        state[key] = value
    return state


def fixture_input(fx: dict) -> torch.Tensor:
    shape = tuple(int(s) for s in fx["input_shape"])
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(fx["input_seed"])))


def _encoder(merging: str) -> torch.nn.Module:
    backbone, _, _ = build_backbone({"name": "swinunetr", "kwargs": {"feature_size": 12, "use_v2": True, "merging": merging}})
    return backbone.eval()


def _features(backbone: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        hidden = backbone.net.swinViT(x, True)
        return backbone(x), hidden


def _hidden0(hidden: list[torch.Tensor], like: np.ndarray) -> torch.Tensor:
    """The corner of the first stage's output (``swinViT`` hidden[0], normalised) the fixture stores."""
    return hidden[0][tuple(slice(0, s) for s in like.shape)]


def _relative(a: torch.Tensor, b: np.ndarray) -> float:
    return float(torch.linalg.norm(a - torch.from_numpy(b)) / torch.linalg.norm(torch.from_numpy(b)))


def test_v13_merge_reproduces_official_encoder(fixture):
    backbone = _encoder("v1.3")
    missing, unexpected = backbone.net.load_state_dict(fixture_weights(fixture), strict=False)
    assert not unexpected and all(k.endswith("relative_position_index") for k in missing)
    features, hidden = _features(backbone, fixture_input(fixture))
    np.testing.assert_allclose(features.numpy(), fixture["features"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(_hidden0(hidden, fixture["hidden0"]).numpy(), fixture["hidden0"], atol=1e-5, rtol=0)


def test_distinct_merge_differs_from_official_encoder(fixture):
    """The new merge with the same weights is another network (what the old code built): 0.36 relative L2."""
    backbone = _encoder("distinct")
    backbone.net.load_state_dict(fixture_weights(fixture), strict=False)
    features, _ = _features(backbone, fixture_input(fixture))
    assert _relative(features, fixture["features"]) > 0.1


def test_merging_variant_and_default():
    net = build_network("swinunetr", 1, 2, feature_size=12, merging="v1.3")
    assert isinstance(net.swinViT.layers1[0].downsample, PatchMergingV13)
    old = build_network("swinunetr", 1, 2, feature_size=12)  # bundles recording no variant: MONAI's new merge
    assert type(old.swinViT.layers1[0].downsample).__name__ == "PatchMerging"


def test_v13_merge_order():
    """Channel block n of the merged tokens is the 1.3.0 slice n: (0,0,0) (1,0,0) (0,1,0) (0,0,1) (1,0,1) (0,1,0) (0,0,1) (1,1,1)."""
    merge = PatchMergingV13(1)
    x = torch.arange(8.0).reshape(1, 2, 2, 2, 1)  # value = 4d + 2h + w
    captured = {}
    merge.norm.register_forward_hook(lambda m, inp, out: captured.setdefault("x", inp[0]))
    merge(x)
    assert captured["x"].flatten().tolist() == [0, 4, 2, 1, 5, 2, 1, 7]


def _official_state(fx: dict) -> dict[str, torch.Tensor]:
    """The fixture weights plus the module's integer buffers, in the official key layout."""
    state = fixture_weights(fx)
    ref = build_network("swinunetr", 1, 2, feature_size=12).state_dict()
    state.update({k: v for k, v in ref.items() if k.endswith("relative_position_index")})
    return state


def test_import_voco_layout_reproduces_official_encoder(fixture, tmp_path):
    ckpt = tmp_path / "VoCo_fs12_SSL_head.pt"
    torch.save(_official_state(fixture), ckpt)
    import_voco_weights(ckpt, "voco-v2", tmp_path / "bundle")
    bundle = read_bundle(tmp_path / "bundle")
    assert bundle.network["kwargs"]["merging"] == "v1.3"
    assert "merging" in bundle.meta["provenance"]["assumed"]
    record, state = voco_backbone_state(bundle)
    backbone = build_backbone(record)[0].eval()
    backbone.net.load_state_dict(state)
    features, _ = _features(backbone, fixture_input(fixture))
    np.testing.assert_allclose(features.numpy(), fixture["features"], atol=1e-5, rtol=0)


def test_import_swinunetr_seg_encoder_reproduces_official(fixture, tmp_path):
    seg = build_network("swinunetr", 1, 3, feature_size=12).state_dict()
    seg.update(_official_state(fixture))
    ckpt = tmp_path / "model_btcv.pt"
    torch.save({"state_dict": seg}, ckpt)
    import_swinunetr_segmentation(ckpt, tmp_path / "seg")
    bundle = read_bundle(tmp_path / "seg")
    assert bundle.network["kwargs"]["merging"] == "v1.3"
    net = build_network(bundle.network["name"], **bundle.network["kwargs"]).eval()
    net.load_state_dict(bundle.state_dict())
    with torch.no_grad():
        features = torch.cat([o.mean(dim=(2, 3, 4)) for o in swinunetr_encoder_outputs(net, fixture_input(fixture))], 1)
    np.testing.assert_allclose(features.numpy(), fixture["features"], atol=1e-5, rtol=0)
