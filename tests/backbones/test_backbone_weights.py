"""pretrained=<file>: local .pth/.safetensors of a FULL classification model, checked strictly.

Nothing here touches the network: ``pretrained=True`` is exercised with torchvision's
weight fetch (``WeightsEnum.get_state_dict``) and ``timm.create_model`` mocked out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision.models as tvm
from backbone_testutils import hooked_forward
from safetensors.torch import save_file
from torchvision.models._api import WeightsEnum

from lit_vision.backbones import IncompatibleWeightsError, create_backbone, load_weight_file

RESNET_NODES = ["relu", "layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    torch.manual_seed(1)
    return tvm.resnet18().eval()


def _assert_maps_equal(feats: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(feats) == len(expected)
    for a, b in zip(feats, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_tv_weight_file_reproduces_the_source_model(resnet18, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"resnet18.{fmt}"
    state = resnet18.state_dict()
    torch.save(state, path) if fmt == "pth" else save_file(state, str(path))
    bb = create_backbone("tv/resnet18", pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    _, hooked = hooked_forward(resnet18, RESNET_NODES, x)
    _assert_maps_equal(bb(x), [hooked[n] for n in RESNET_NODES])
    assert not any(k.startswith("fc.") for k in bb.body.state_dict())  # classifier dropped


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    ],
)
def test_checkpoint_wrappers_are_unwrapped(resnet18, tmp_path: Path, wrap) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(resnet18.state_dict()), path)
    loaded = load_weight_file(path)
    assert loaded.keys() == resnet18.state_dict().keys()
    bb = create_backbone("tv/resnet18", pretrained=path, out_indices=[-1]).eval()
    x = torch.randn(1, 3, 32, 32)
    _, hooked = hooked_forward(resnet18, ["layer4"], x)
    _assert_maps_equal(bb(x), [hooked["layer4"]])


def test_timm_training_checkpoint_loads_its_ema_weights_as_timm_does(tmp_path: Path) -> None:
    """timm's train.py writes ``*.pth.tar`` with ``state_dict`` and ``state_dict_ema``; timm's loader (``use_ema=True``,
    what ``--initial-checkpoint`` uses) takes the EMA weights. Keys may carry ``torch.compile``'s ``_orig_mod.``."""
    raw, ema = timm.create_model("resnet18").state_dict(), timm.create_model("resnet18").state_dict()
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "state_dict": raw, "state_dict_ema": {f"_orig_mod.{k}": v for k, v in ema.items()}}, path)
    reference = timm.models.load_state_dict(str(path))
    assert torch.equal(reference["conv1.weight"], ema["conv1.weight"])
    loaded = load_weight_file(path)
    assert loaded.keys() == ema.keys() and all(torch.equal(loaded[k], ema[k]) for k in ema)
    bb = create_backbone("timm/resnet18", pretrained=path)
    assert torch.equal(bb.model.layer4[1].conv2.weight, ema["layer4.1.conv2.weight"])


def test_in_memory_state_dict_and_missing_batchnorm_counters(resnet18) -> None:
    """Old torchvision checkpoints predate BatchNorm's num_batches_tracked."""
    state = {k: v for k, v in resnet18.state_dict().items() if not k.endswith("num_batches_tracked")}
    bb = create_backbone("tv/resnet18", pretrained=state).eval()
    x = torch.randn(1, 3, 32, 32)
    _, hooked = hooked_forward(resnet18, RESNET_NODES, x)
    _assert_maps_equal(bb(x), [hooked[n] for n in RESNET_NODES])


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("tv/resnet34", r"missing key\(s\): layer1\.2\."),  # same key shapes, more blocks
        ("tv/resnet50", r"wrong shape key\(s\): layer1\.0\.conv1\.weight"),
        ("tv/squeezenet1_1", r"missing key\(s\): features\.0\.weight"),
        ("timm/resnet50", r"missing key\(s\)"),
    ],
)
def test_wrong_architecture_file_fails_clearly(resnet18, tmp_path: Path, name: str, match: str) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18.state_dict(), path)
    with pytest.raises(IncompatibleWeightsError, match=match) as info:
        create_backbone(name, pretrained=path)
    assert str(path) in str(info.value) and name in str(info.value)


def test_unexpected_non_classifier_keys_fail(resnet18, tmp_path: Path) -> None:
    path = tmp_path / "extra.safetensors"
    save_file({**resnet18.state_dict(), "extra_branch.weight": torch.zeros(3)}, str(path))
    with pytest.raises(IncompatibleWeightsError, match=r"unexpected key\(s\): extra_branch\.weight"):
        create_backbone("tv/resnet18", pretrained=path)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("tv/resnet18", pretrained=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_backbone("timm/resnet18", pretrained=str(tmp_path / "nope.safetensors"))
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"")
    with pytest.raises(ValueError, match="Unsupported weight file"):
        create_backbone("tv/resnet18", pretrained=odd)


def test_densenet_legacy_checkpoint_keys_are_renamed(tmp_path: Path) -> None:
    """torchvision's published DenseNet files use pre-1.0 keys ('norm.1'); its builder renames them."""
    src = tvm.densenet121().eval()
    legacy = {}
    for k, v in src.state_dict().items():
        if k.endswith("num_batches_tracked"):  # those files predate the counter
            continue
        for old in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            k = k.replace(f".{old}.", f".{old[:-1]}.{old[-1]}.") if "denselayer" in k else k
        legacy[k] = v
    assert any(".norm.1." in k for k in legacy)
    path = tmp_path / "densenet121.pth"
    torch.save(legacy, path)
    bb = create_backbone("tv/densenet121", pretrained=path, out_indices=[-1]).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(bb(x)[-1], torch.relu(src.features(x)))


def test_googlenet_file_keeps_published_aux_keys_and_transform_input(tmp_path: Path) -> None:
    """Published GoogLeNet files carry aux heads and expect transform_input=True."""
    src = tvm.googlenet(weights=None, aux_logits=True, init_weights=False, transform_input=True).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(src.state_dict(), path)
    x = torch.randn(1, 3, 64, 64)
    logits, hooked = hooked_forward(src, ["inception5b"], x)
    bb = create_backbone("tv/googlenet", pretrained=path).eval()
    torch.testing.assert_close(bb(x)[-1], hooked["inception5b"])
    torch.testing.assert_close(src.fc(torch.flatten(src.avgpool(bb(x)[-1]), 1)), logits)
    own = create_backbone("tv/googlenet", pretrained=path, transform_input=False).eval()
    assert not torch.allclose(own(x)[-1], hooked["inception5b"])


def test_timm_weight_file_reproduces_the_source_model(tmp_path: Path) -> None:
    src = timm.create_model("resnet18").eval()
    path = tmp_path / "timm_resnet18.safetensors"
    save_file(src.state_dict(), str(path))
    bb = create_backbone("timm/resnet18", pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    names = ["act1", "layer1", "layer2", "layer3", "layer4"]
    _, hooked = hooked_forward(src, names, x)
    _assert_maps_equal(bb(x), [hooked[n] for n in names])
    assert "state_dict" not in bb.model.pretrained_cfg  # no second copy of the weights kept
    # timm adapts the stem of an RGB checkpoint to in_chans=1 itself.
    gray = create_backbone("timm/resnet18", pretrained=path, in_chans=1).eval()
    assert gray.model.conv1.weight.shape[1] == 1
    torch.testing.assert_close(gray.model.layer1[0].conv1.weight, src.layer1[0].conv1.weight)


def test_timm_vit_file_loads_at_another_img_size_as_timm_does(tmp_path: Path) -> None:
    """timm's own loading resamples a ViT's ``pos_embed`` to ``img_size`` (its checkpoint filter); a local file must
    too, not fail the strict check on the raw file's shape. A file of another width still fails."""
    src = timm.create_model("vit_tiny_patch16_224", img_size=64)  # 4x4 patches
    path = tmp_path / "vit_tiny.pth"
    torch.save(src.state_dict(), path)
    expected = timm.create_model("vit_tiny_patch16_224", img_size=32, pretrained=True, features_only=True,
                                 out_indices=[-1], pretrained_cfg_overlay={"state_dict": src.state_dict(),
                                                                           "source": None})
    bb = create_backbone("timm/vit_tiny_patch16_224", pretrained=path, img_size=32, out_indices=[-1])
    assert bb.model.model.pos_embed.shape == (1, 5, 192)
    torch.testing.assert_close(bb.model.model.pos_embed, expected.model.pos_embed)
    torch.testing.assert_close(bb.model.model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    torch.save(timm.create_model("vit_small_patch16_224", img_size=64).state_dict(), tmp_path / "vit_small.pth")
    with pytest.raises(IncompatibleWeightsError, match="wrong shape"):
        create_backbone("timm/vit_tiny_patch16_224", pretrained=tmp_path / "vit_small.pth", img_size=32,
                        out_indices=[-1])


def test_pretrained_true_uses_torchvision_weights_without_network(monkeypatch) -> None:
    """pretrained=True must go through torchvision's own weights path (aux heads, transform_input)."""
    published = {
        "googlenet": tvm.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict(),
        "inception_v3": tvm.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
    }

    def fake_get_state_dict(self, *args, **kwargs):
        return published[type(self).__name__.removesuffix("_Weights").lower()]

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    for arch in published:
        bb = create_backbone(f"tv/{arch}", pretrained=True)
        body = bb.body.state_dict()
        assert all(torch.equal(body[k], published[arch][k]) for k in body)
        assert not any(k.startswith(("aux1", "aux2", "AuxLogits")) for k in body)


def test_pretrained_true_is_passed_to_timm(monkeypatch) -> None:
    calls = []
    real = timm.create_model

    def fake_create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs.get("features_only")))
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    create_backbone("timm/resnet18", pretrained=True)
    assert calls == [("resnet18", True, True)]
