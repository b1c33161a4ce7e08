"""MixupCutmix callback: mixing checked against hand-computed references (torchvision pairs i with i-1)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from tests.callbacks._cb_helpers import loader, trainer_kwargs
from torch import nn

from lit_vision.callbacks import MixupCutmix

N, C, H, W, K = 6, 3, 8, 10, 7  # batch, channels, height, width, num_classes


class HasClasses(pl.LightningModule):
    def __init__(self, num_classes: Any = K) -> None:
        super().__init__()
        self.num_classes = num_classes


def make_callback(**kwargs: Any) -> MixupCutmix:
    cb = MixupCutmix(**kwargs)
    cb.setup(None, HasClasses(), "fit")  # type: ignore[arg-type]
    return cb


def random_batch(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(N, C, H, W, generator=g),
        "label": torch.arange(N),  # distinct classes so the weight of each source is readable
        "path": [f"{i}.png" for i in range(N)],
    }


def constant_batch(n: int = N) -> dict[str, Any]:
    """Sample i is the constant image i + 1, so the source of every pixel after mixing is identifiable."""
    return {
        "image": (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1).expand(n, C, H, W).clone(),
        "label": torch.arange(n),
    }


def apply(cb: MixupCutmix, batch: dict[str, Any]) -> dict[str, Any]:
    cb.on_train_batch_start(None, None, batch, 0)  # type: ignore[arg-type]
    return batch


def is_cutmix(image: torch.Tensor, original: torch.Tensor) -> bool:
    """CutMix only copies pixels (each pixel equals own or rolled value); MixUp blends every pixel."""
    own, rolled = original, original.roll(1, 0)
    return bool(((image == own) | (image == rolled)).all())


def test_mixup_blends_each_sample_with_previous_one_using_lambda_from_labels() -> None:
    torch.manual_seed(0)
    cb = make_callback(mixup_alpha=0.8, cutmix_alpha=0.0)
    batch = random_batch()
    x, paths = batch["image"].clone(), list(batch["path"])
    apply(cb, batch)

    soft = batch["label"]
    assert soft.shape == (N, K) and soft.dtype == torch.float32
    idx = torch.arange(N)
    lam = soft[0, 0].item()  # weight on each sample's own class
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(soft[idx, idx], torch.full((N,), lam))
    torch.testing.assert_close(soft[idx, (idx - 1) % N], torch.full((N,), 1 - lam))
    torch.testing.assert_close(soft.sum(1), torch.ones(N))
    torch.testing.assert_close(batch["image"], lam * x + (1 - lam) * x.roll(1, 0))
    assert batch["path"] == paths  # other keys untouched


def test_mixup_lambda_follows_beta_alpha() -> None:
    torch.manual_seed(1)
    cb = make_callback(mixup_alpha=0.2, cutmix_alpha=0.0)
    lams = torch.tensor([apply(cb, random_batch())["label"][0, 0].item() for _ in range(400)])
    # Beta(0.2, 0.2) is U-shaped: most mass near 0 and 1; mean 0.5.
    assert abs(lams.mean().item() - 0.5) < 0.08
    assert ((lams < 0.1) | (lams > 0.9)).float().mean().item() > 0.5


def test_cutmix_pasted_pixel_fraction_equals_label_weight_of_previous_sample() -> None:
    torch.manual_seed(0)
    cb = make_callback(mixup_alpha=0.0, cutmix_alpha=1.0)
    nontrivial = 0
    for _ in range(20):
        batch = constant_batch()
        x = batch["image"].clone()
        apply(cb, batch)
        img, soft = batch["image"], batch["label"]
        assert is_cutmix(img, x)
        for i in range(N):
            j = (i - 1) % N
            from_rolled = (img[i] == j + 1).float().mean().item()
            assert soft[i, j].item() == pytest.approx(from_rolled, abs=1e-6)
            assert soft[i, i].item() == pytest.approx(1 - from_rolled, abs=1e-6)
        # one box per batch: the same pixels are pasted in every sample
        masks = torch.stack([img[i] == ((i - 1) % N) + 1 for i in range(N)])
        assert (masks == masks[0]).all()
        nontrivial += int(0 < soft[0, N - 1].item() < 1)
    assert nontrivial >= 10


def test_prob_zero_leaves_batch_untouched_including_hard_labels() -> None:
    torch.manual_seed(0)
    cb = make_callback(prob=0.0)
    batch = random_batch()
    expected = {k: (v.clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in batch.items()}
    for _ in range(20):
        apply(cb, batch)
    assert batch["label"].dtype == torch.long
    torch.testing.assert_close(batch["label"], expected["label"])
    torch.testing.assert_close(batch["image"], expected["image"])
    assert batch["path"] == expected["path"]


@pytest.mark.parametrize("switch_prob", [0.0, 0.3, 1.0])
def test_switch_prob_is_probability_of_cutmix(switch_prob: float) -> None:
    torch.manual_seed(2024)
    cb = make_callback(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob)
    draws = 400
    cutmix = 0
    for _ in range(draws):
        batch = constant_batch(2)
        x = batch["image"].clone()
        apply(cb, batch)
        cutmix += is_cutmix(batch["image"], x)
    # Binomial(400, 0.3): std ~0.023; tolerance ~3.5 std. (A MixUp lam of exactly 0/1 is practically impossible.)
    assert cutmix / draws == pytest.approx(switch_prob, abs=0.08)


def test_prob_is_probability_of_mixing_a_batch() -> None:
    torch.manual_seed(7)
    cb = make_callback(mixup_alpha=1.0, cutmix_alpha=0.0, prob=0.25)
    mixed = sum(apply(cb, constant_batch(2))["label"].ndim == 2 for _ in range(400))
    assert mixed / 400 == pytest.approx(0.25, abs=0.08)


class TinyImageClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 3
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
        self.train_targets: list[torch.Tensor] = []
        self.val_targets: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.train_targets.append(batch["label"].clone())
        return F.cross_entropy(self.net(batch["image"]), batch["label"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_targets.append(batch["label"].clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_mixes_training_batches_only_inside_trainer_fit() -> None:
    torch.manual_seed(0)
    model = TinyImageClassifier()
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=1, callbacks=[MixupCutmix()], limit_val_batches=2))
    trainer.fit(model, train_dataloaders=loader(12, 4, shape=(3, 4, 4)), val_dataloaders=loader(8, 4, shape=(3, 4, 4)))

    assert len(model.train_targets) == 3
    for target in model.train_targets:
        assert target.shape == (4, 3) and target.dtype == torch.float32
        torch.testing.assert_close(target.sum(1), torch.ones(4))
    assert len(model.val_targets) == 2
    assert all(t.dtype == torch.long and t.ndim == 1 for t in model.val_targets)


def test_setup_requires_num_classes_on_module() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        MixupCutmix().setup(None, HasClasses(num_classes=None), "fit")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mixup_alpha": -0.1},
        {"cutmix_alpha": -1.0},
        {"mixup_alpha": 0.0, "cutmix_alpha": 0.0},
        {"switch_prob": 1.5},
        {"prob": -0.1},
    ],
)
def test_mixupcutmix_rejects_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MixupCutmix(**kwargs)
