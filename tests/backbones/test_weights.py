"""load_pretrained: reports, mismatches, wrappers and hostile files."""

from pathlib import Path

import pytest
import torch
import torchvision

from backbones import (
    build_backbone,
    build_classifier,
    get_backbone,
    list_classifiers,
    load_pretrained,
)
from backbones.vgg import VGGHead


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(ValueError, match=r"tensor 'backbone\.res2\.0\.conv1\.weight'") as e:
        load_pretrained(build_classifier("resnet18"), path)
    assert "in the checkpoint but" in str(e.value)


def test_num_classes_mismatch(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match=r"'fc\.weight' has shape \(1000, 512\).*\(10, 512\)"):
        load_pretrained(build_classifier("resnet18", num_classes=10), path)


def test_wrapped_and_ddp_checkpoints_and_our_own_layout(tmp_path):
    src = build_classifier("resnet18").eval()
    x = torch.randn(1, 3, 32, 32)
    ddp = {"module." + k: v for k, v in src.state_dict().items()}
    torch.save({"model": ddp, "iteration": 3}, tmp_path / "ckpt.pth")
    dst = build_classifier("resnet18")
    report = load_pretrained(dst, tmp_path / "ckpt.pth")
    assert not report.missing and not report.unexpected
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x), src(x))


def test_vgg_head_takes_fc6_fc7(tmp_path):
    tv = torchvision.models.vgg16()
    torch.save(tv.state_dict(), tmp_path / "vgg.pth")
    head = VGGHead()
    report = load_pretrained(head, tmp_path / "vgg.pth")
    assert report.loaded == ["fc6.bias", "fc6.weight", "fc7.bias", "fc7.weight"]
    assert torch.equal(head.fc7.weight, tv.classifier[3].weight)


def test_group_norm_backbone_reports_bn_statistics(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    report = load_pretrained(build_backbone("resnet18", norm="GN"), tmp_path / "r18.pth")
    assert "backbone.stem.bn1.running_mean" in report.unexpected
    assert "loaded" in str(report) and "unexpected" in str(report)


def test_unknown_weights_name_and_missing_file():
    with pytest.raises(ValueError, match="available: IMAGENET1K_V1"):
        load_pretrained(build_backbone("resnet18"), "IMAGENET9K")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_pretrained(build_backbone("resnet18"), "nowhere/r18.pth")


def test_pickle_payload_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_pretrained(build_backbone("resnet18"), path)
    assert not marker.exists()


def test_registered_weight_urls_are_torchvisions():
    """The registry's ImageNet weights by name are torchvision's, URL (and hash prefix) alike."""
    for name in list_classifiers():
        weights = get_backbone(name, classifier=True).weights
        if not hasattr(torchvision.models, name):
            assert not weights, name  # the CIFAR nets have none
            continue
        enum = torchvision.models.get_model_weights(name)
        assert weights == {k: v.url for k, v in enum.__members__.items()}, name


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch hub's cache in a temporary folder, and no network: a download is an error."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")  # nothing pinned the hub dir

    def offline(url, *args, **kwargs):
        raise OSError(f"no network in tests ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.parametrize("name", ["resnext50_32x4d", "wide_resnet50_2"])
def test_weights_by_name_from_the_hub_cache(name, hub_dir):
    """A name resolves to torchvision's file in torch hub's cache (a local file standing in for
    the download); one not in the cache is downloaded, and without network the error says what
    to do."""
    tv = getattr(torchvision.models, name)().eval()
    weights = get_backbone(name).weights
    hub_dir.mkdir(parents=True)
    torch.save(tv.state_dict(), hub_dir / Path(weights["IMAGENET1K_V2"]).name)
    ours = build_classifier(name)
    report = load_pretrained(ours, "DEFAULT")  # = IMAGENET1K_V2, as in torchvision
    assert not report.missing and not report.unexpected
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), tv(x), atol=1e-5, rtol=1e-5)
    backbone = build_backbone(name, out_features=["res4"])
    enum = torchvision.models.get_model_weights(name).__name__  # torchvision's spelling too
    assert load_pretrained(backbone, f"{enum}.IMAGENET1K_V2").loaded
    with pytest.raises(
        RuntimeError,
        match=r"download https://download.pytorch.org/models/.*"
        r"elsewhere and pass the local path",
    ):
        load_pretrained(backbone, "IMAGENET1K_V1")
