"""The digits quickstart's DataModule: an ImageFolder over the embedded UCI digits (scikit-learn's ``load_digits`` data)."""

from __future__ import annotations

from typing import Any

from lit_vision.data.classification.imagefolder import ImageFolderDataModule
from lit_vision.data.embedded.digits import (
    DIGITS_MEAN,
    DIGITS_SIZE,
    DIGITS_STD,
    write_digits,
)


class DigitsDataModule(ImageFolderDataModule):
    """:class:`ImageFolderDataModule` over the embedded digits (written on first use).

    Defaults suit 32-px digits: no flipping (a flipped 2 is not a 2), no colour jitter, a mild crop
    scale, in-memory caching of the 1,797 tiny images, and ``crop_pct=0.95`` at evaluation so digits
    appear as large as in the (zoomed-in) training crops: the FixRes effect, worth +0.3-0.5 points here.
    All other arguments are those of :class:`ImageFolderDataModule`.
    """

    def __init__(
        self,
        cache_dir: str | None = None,
        image_size: int = DIGITS_SIZE,
        mean: tuple[float, float, float] = DIGITS_MEAN,
        std: tuple[float, float, float] = DIGITS_STD,
        scale_range: tuple[float, float] = (0.85, 1.0),
        hflip: bool = False,
        color_jitter: float = 0.0,
        crop_pct: float = 0.95,
        cache_images: bool = True,
        **kwargs: Any,
    ) -> None:
        root = write_digits(cache_dir)
        super().__init__(
            root=str(root),
            image_size=image_size,
            mean=mean,
            std=std,
            scale_range=scale_range,
            hflip=hflip,
            color_jitter=color_jitter,
            crop_pct=crop_pct,
            cache_images=cache_images,
            **kwargs,
        )
