import pytest
import torch

from ssl3d.errors import ConfigError
from ssl3d.nets.builders import build_network
from ssl3d.nets.unet import UNet, UNetEncoder


def test_shapes_and_encoder_levels():
    net = UNet(1, 3, channels=(4, 8, 16))
    x = torch.randn(2, 1, 16, 16, 16)
    assert net(x).shape == (2, 3, 16, 16, 16)
    features = net.encoder(x)
    assert [tuple(f.shape[1:]) for f in features] == [(4, 16, 16, 16), (8, 8, 8, 8), (16, 4, 4, 4)]
    assert net.encoder.out_dim == 28


def test_deep_supervision_only_in_training():
    net = UNet(1, 5, channels=(4, 8, 16), deep_supervision=True)
    outs = net(torch.randn(1, 1, 16, 16, 16))
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 16, 16), (8, 8, 8)]
    net.eval()
    assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 5, 16, 16, 16)


def test_every_parameter_gets_a_gradient():
    net = UNet(1, 2, channels=(4, 8, 16))
    net(torch.randn(1, 1, 8, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_errors():
    with pytest.raises(ConfigError, match="divisible by 4"):
        UNetEncoder(1, (4, 8, 16))(torch.zeros(1, 1, 6, 8, 8))
    with pytest.raises(ConfigError, match="channels"):
        UNetEncoder(1, (4,))
    with pytest.raises(ConfigError, match="Did you mean 'unet-small'"):
        build_network("unet_small")
    with pytest.raises(ConfigError, match="network 'unet-small'"):
        build_network("unet-small", colour=3)


def test_builders():
    assert isinstance(build_network("cnn-small", channels=[4, 8]), UNetEncoder)
    swin = build_network("swin-b", 1, 2, feature_size=12)
    assert swin.swinViT is not None and not swin.swinViT.layers1[0].blocks[0].use_checkpoint
    checkpointed = build_network("swinunetr", 1, 2, feature_size=12, use_v2=True, use_checkpoint=True)  # as the Swin presets
    assert all(block.use_checkpoint for layer in checkpointed.swinViT.layers4 for block in layer.blocks)
    with pytest.raises(ConfigError, match="multiple of 12"):
        build_network("swinunetr", feature_size=10)
