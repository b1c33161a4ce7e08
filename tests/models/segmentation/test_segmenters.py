"""build_segmenter: output contract for any size, overfitting per architecture, the papers' details, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_vision.heads.segmentation import BilinearConvTranspose2d
from lit_vision.heads.segmentation.deeplab import ASPPPooling
from lit_vision.models.segmentation import SegmentationArchitecture, Segmenter, build_segmenter

SEGMENTATION_ARCHITECTURES = tuple(SegmentationArchitecture.choices())

K = 3
IGNORE = 255
# Tiny widths so every test runs in seconds on a CPU.
TINY = {
    "fcn": {},
    "unet": {"decoder_channels": (32, 32, 16, 16, 16)},
    "deeplabv3": {"aspp_channels": 32},
    "deeplabv3plus": {"aspp_channels": 32, "decoder_channels": 32},
}
CLASSIC = {"base_channels": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def tiny(architecture: str, backbone: str | None, **kw) -> Segmenter:
    defaults = CLASSIC if backbone is None else TINY[architecture]
    return build_segmenter(architecture, backbone, K, **(defaults | kw))


CASES = [(a, b) for a in SEGMENTATION_ARCHITECTURES for b in ("tv/resnet18", "timm/test_efficientnet")]
CASES.append(("unet", None))  # the classic U-Net with its own encoder


@pytest.mark.parametrize("aux_loss", [False, True])
@pytest.mark.parametrize(("architecture", "backbone"), CASES)
def test_logits_match_any_input_size_in_train_and_eval(architecture: str, backbone: str | None, aux_loss: bool) -> None:
    model = tiny(architecture, backbone, aux_loss=aux_loss)
    assert model.num_classes == K
    keys = {"out", "aux"} if aux_loss else {"out"}
    model.train()
    out = model(torch.randn(2, 3, 75, 53))
    assert set(out) == keys and all(v.shape == (2, K, 75, 53) for v in out.values())
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters()), "a parameter is not on the loss path (DDP would fail)"
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 97))
    assert set(out) == keys and all(v.shape == (1, K, 64, 97) for v in out.values())


@pytest.mark.parametrize("architecture", SEGMENTATION_ARCHITECTURES)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_backbones_keep_the_contract(architecture: str, output_stride: int) -> None:
    model = tiny(architecture, "timm/test_resnet", output_stride=output_stride, aux_loss=True).train()
    out = model(torch.randn(2, 3, 53, 75))
    assert all(v.shape == (2, K, 53, 75) for v in out.values())


def test_output_stride_sets_the_deep_map_size() -> None:
    x = torch.randn(1, 3, 64, 64)
    for backbone in ("tv/resnet18", "timm/test_resnet"):
        sizes = {}
        for os_ in (None, 16, 8):
            model = tiny("deeplabv3", backbone, output_stride=os_).eval()
            with torch.no_grad():
                sizes[os_] = tuple(model.backbone(x)[-1].shape[-2:])
                assert model(x)["out"].shape == (1, K, 64, 64)
        assert sizes == {None: (2, 2), 16: (4, 4), 8: (8, 8)}


def test_aux_head_reads_the_penultimate_stage() -> None:
    model = tiny("deeplabv3", "tv/resnet18", aux_loss=True)
    assert model.aux_head[0].in_channels == model.backbone.channels[-2] == 256  # layer3, as torchvision


# --- the papers' details ------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_learned_upsampling_starts_as_bilinear_interpolation(factor: int) -> None:
    """Reference: F.interpolate; they agree away from the border (zero padding vs edge clamping)."""
    up = BilinearConvTranspose2d(2, factor)
    ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(7.0), indexing="ij")
    x = torch.stack([0.3 * xs - 0.7 * ys, torch.randn(9, 7)])[None]  # a ramp and noise
    with torch.no_grad():
        got = up(x)
    want = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert got.shape == want.shape
    b = factor  # interior: one input pixel's worth from every edge
    torch.testing.assert_close(got[..., b:-b, b:-b], want[..., b:-b, b:-b], rtol=1e-5, atol=1e-5)
    assert up.weight.requires_grad  # learned, not fixed


def test_fcn_variants_fuse_the_right_stages() -> None:
    fusions = {}
    for variant in ("32s", "16s", "8s"):
        model = tiny("fcn", "tv/resnet18", fcn_variant=variant, upsampling="learned")
        head = model.head
        fusions[variant] = [conv.in_channels for conv in head.score_skips]
        assert all(isinstance(u, BilinearConvTranspose2d) and u.stride == (2, 2) for u in head.upsample)
        assert all(not conv.weight.detach().any() for conv in head.score_skips)  # zero-init, as the paper
    assert fusions == {"32s": [], "16s": [256], "8s": [256, 128]}  # layer3 (stride 16), layer2 (stride 8)
    # On a dilated backbone the fused maps share a resolution: nothing to upsample.
    dilated = tiny("fcn", "tv/resnet18", output_stride=8, upsampling="learned")
    assert all(isinstance(u, nn.Identity) for u in dilated.head.upsample)


def test_aspp_has_the_configured_rates() -> None:
    def rates(model: Segmenter) -> list[int]:
        return [b[0].dilation[0] for b in model.head.aspp.branches[1:-1]]

    assert rates(tiny("deeplabv3", "timm/test_resnet", atrous_rates=(2, 3, 5))) == [2, 3, 5]
    assert rates(tiny("deeplabv3", "timm/test_resnet", output_stride=16)) == [6, 12, 18]  # the paper's
    assert rates(tiny("deeplabv3", "timm/test_resnet", output_stride=8)) == [12, 24, 36]  # doubled at 8
    model = tiny("deeplabv3plus", "timm/test_resnet", output_stride=16)
    assert rates(model) == [6, 12, 18]
    for branch in model.head.aspp.branches[1:-1]:
        assert branch[0].padding == branch[0].dilation  # size-preserving


def test_deeplabv3plus_uses_separable_convs_and_a_48_channel_skip() -> None:
    model = build_segmenter("deeplabv3plus", "tv/resnet18", K, output_stride=16, aspp_channels=32, decoder_channels=32)
    head = model.head
    assert head.low_level_index == 1 and model.backbone.reductions[1] == 4  # layer1, stride 4
    assert head.low_level[0].in_channels == 64 and head.low_level[0].out_channels == 48
    blocks = list(head.decoder) + list(head.aspp.branches[1:-1])
    for block in blocks:
        depthwise, pointwise = block[0], block[3]
        assert depthwise.kernel_size == (3, 3) and depthwise.groups == depthwise.in_channels == depthwise.out_channels
        assert pointwise.kernel_size == (1, 1) and pointwise.groups == 1
    dense_3x3 = [m for m in head.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]
    assert dense_3x3 == []


def test_deeplabv3plus_light_decoder_is_smps_layout() -> None:
    """``decoder_convs=1, depthwise_norm=False``: depthwise -> pointwise -> BN -> ReLU, one decoder conv.

    Parameter counts by hand (BN: 2 per channel): each separable conv with C_in -> C_out has 9 C_in
    (depthwise) + C_in C_out (pointwise) + 2 C_out; the paper's form adds 2 C_in (the depthwise BN).
    """
    a, d, low = 32, 32, 48
    paper = build_segmenter("deeplabv3plus", "tv/resnet18", K, output_stride=16, aspp_channels=a, decoder_channels=d)
    light = build_segmenter("deeplabv3plus", "tv/resnet18", K, output_stride=16, aspp_channels=a, decoder_channels=d,
                            decoder_convs=1, depthwise_norm=False)
    assert len(light.head.decoder) == 1 and len(paper.head.decoder) == 2
    for block in list(light.head.decoder) + list(light.head.aspp.branches[1:-1]):
        depthwise, pointwise, norm = block[0], block[1], block[2]
        assert depthwise.groups == depthwise.in_channels and depthwise.bias is None
        assert depthwise.padding == depthwise.dilation  # size-preserving
        assert pointwise.kernel_size == (1, 1) and isinstance(norm, nn.BatchNorm2d)
        assert norm.num_features == pointwise.out_channels
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    c_in = 512  # the deep map of ResNet-18
    assert count(paper.head.aspp) - count(light.head.aspp) == 3 * 2 * c_in  # three depthwise BNs
    second = 9 * d + 2 * d + d * d + 2 * d  # the paper's second decoder conv, depthwise BN included
    assert count(paper.head.decoder) - count(light.head.decoder) == 2 * (a + low) + second
    x = torch.randn(2, 3, 64, 64)
    assert light(x)["out"].shape == (2, K, 64, 64)
    with pytest.raises(ValueError, match="decoder_convs"):
        build_segmenter("deeplabv3plus", "tv/resnet18", K, decoder_convs=0)


@pytest.mark.parametrize("architecture", ["deeplabv3", "deeplabv3plus"])
def test_image_pooling_trains_with_a_batch_of_one(architecture: str) -> None:
    """torchvision's ASPPPooling (BatchNorm on a 1x1 map) raises here; ours has no norm."""
    model = tiny(architecture, "timm/test_resnet", output_stride=16).train()
    pooling = model.head.aspp.branches[-1]
    assert isinstance(pooling, ASPPPooling)
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in pooling.modules())
    model(torch.randn(1, 3, 64, 64))["out"].sum().backward()


def test_classic_unet_is_the_papers_symmetric_network() -> None:
    model = build_segmenter("unet", None, K)  # full width: structure only, no forward
    assert model.backbone.channels == [64, 128, 256, 512, 1024] and model.backbone.reductions == [1, 2, 4, 8, 16]
    ups = [block.up for block in model.head.blocks]
    assert [(u.in_channels, u.out_channels, u.kernel_size, u.stride) for u in ups] == [
        (1024, 512, (2, 2), (2, 2)), (512, 256, (2, 2), (2, 2)), (256, 128, (2, 2), (2, 2)), (128, 64, (2, 2), (2, 2)),
    ]
    assert model.head.classifier.kernel_size == (1, 1) and model.head.classifier.in_channels == 64


# --- overfitting: each architecture really learns -----------------------------------------------


def shapes_batch(n: int = 4, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A rectangle (class 1) and a disk (class 2) of the SAME colour at random places on a
    background (class 0), plus pixel noise: the classes differ by shape, not colour or position.
    The 1-px band where labels meet is ``IGNORE``, as in VOC."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    colours = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.2, 0.2], [0.9, 0.2, 0.2]])
    images, targets = [], []
    for _ in range(n):
        mask = torch.zeros(size, size, dtype=torch.long)
        x0, y0 = torch.randint(0, size - 24, (2,), generator=g).tolist()
        w, h = torch.randint(12, 24, (2,), generator=g).tolist()
        mask[y0:y0 + h, x0:x0 + w] = 1
        cx, cy = torch.randint(10, size - 10, (2,), generator=g).tolist()
        r = int(torch.randint(7, 11, (1,), generator=g))
        mask[(xs - cx) ** 2 + (ys - cy) ** 2 <= r * r] = 2
        images.append(colours[mask].permute(2, 0, 1) + 0.15 * torch.randn(3, size, size, generator=g))
        edge = torch.zeros_like(mask, dtype=torch.bool)
        edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        edge[1:] |= mask[1:] != mask[:-1]
        targets.append(mask.masked_fill(edge, IGNORE))
    return (torch.stack(images) - 0.5) / 0.25, torch.stack(targets)


def mean_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    valid = target != IGNORE
    ious = [((pred == k) & (target == k) & valid).sum() / (((pred == k) | (target == k)) & valid).sum() for k in range(K)]
    return float(torch.stack(ious).mean())


OVERFIT = {  # cheapest backbones that exercise each head; DeepLab at the paper's output strides
    "fcn-8s": ("fcn", "timm/test_resnet", {}),
    "fcn-8s-learned-aux": ("fcn", "timm/test_resnet", {"upsampling": "learned", "aux_loss": True}),
    "unet": ("unet", "timm/test_efficientnet", {}),
    "unet-classic": ("unet", None, {"base_channels": 16}),
    "deeplabv3": ("deeplabv3", "timm/test_resnet", {"output_stride": 8}),
    "deeplabv3plus": ("deeplabv3plus", "timm/test_efficientnet", {"output_stride": 16}),
}


@pytest.mark.parametrize("case", list(OVERFIT))
def test_architecture_overfits_a_few_images(case: str) -> None:
    """Calibrated over 6 seeds (2 image sets x 3 inits): worst loss ratio 0.16, accuracy 0.978, mIoU 0.813."""
    architecture, backbone, kw = OVERFIT[case]
    model = tiny(architecture, backbone, **kw)
    images, targets = shapes_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(60):
        out = model(images)
        loss = F.cross_entropy(out["out"], targets, ignore_index=IGNORE)
        if "aux" in out:
            loss = loss + 0.4 * F.cross_entropy(out["aux"], targets, ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    model.eval()  # judged with running BatchNorm statistics, as validation would
    with torch.no_grad():
        pred = model(images)["out"].argmax(1)
    valid = targets != IGNORE
    accuracy = float((pred[valid] == targets[valid]).float().mean())
    assert accuracy > 0.95 and mean_iou(pred, targets) > 0.75, (accuracy, mean_iou(pred, targets))


# --- errors -------------------------------------------------------------------------------------


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match=r"unknown segmentation architecture 'pspnet'; choose one of \['deeplabv3'"):
        build_segmenter("pspnet", "tv/resnet18", K)


@pytest.mark.parametrize("output_stride", [4, 12, 64])
def test_bad_output_stride(output_stride: int) -> None:
    with pytest.raises(ValueError, match="output_stride must be one of"):
        build_segmenter("deeplabv3", "tv/resnet18", K, output_stride=output_stride)


@pytest.mark.parametrize("backbone", ["tv/vgg11", "timm/densenet121"])
def test_non_dilatable_backbone_with_output_stride(backbone: str) -> None:
    with pytest.raises(ValueError, match=rf"{backbone} cannot be dilated.*resnet"):
        build_segmenter("deeplabv3", backbone, K, output_stride=8)


def test_misused_options_fail_clearly() -> None:
    with pytest.raises(ValueError, match="classic U-Net"):
        build_segmenter("deeplabv3", None, K)
    with pytest.raises(ValueError, match="from scratch"):
        build_segmenter("unet", None, K, output_stride=16)
    with pytest.raises(ValueError, match="from scratch"):
        build_segmenter("unet", None, K, pretrained=True)
    with pytest.raises(TypeError, match=r"does not take \['aspp_channels'\].*fcn_variant='8s'"):
        build_segmenter("fcn", "timm/test_resnet", K, aspp_channels=64)
    with pytest.raises(ValueError, match="fcn_variant"):
        build_segmenter("fcn", "timm/test_resnet", K, fcn_variant="4s")
    with pytest.raises(ValueError, match="decoder_channels"):
        build_segmenter("unet", "timm/test_resnet", K, decoder_channels=(32, 16))
    with pytest.raises(ValueError, match="num_classes"):
        build_segmenter("fcn", "timm/test_resnet", 0)
    with pytest.raises(TypeError, match="pass output_stride to build_segmenter"):
        build_segmenter("fcn", "timm/test_resnet", K, backbone_kwargs={"output_stride": 8})
