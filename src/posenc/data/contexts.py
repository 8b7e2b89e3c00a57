"""Contexts for PPP (Lin et al., ICML 2023; our definition in docs/ppp.md): real images larger than
the crop a backbone is measured on, so that the crop's padding-free reference features can be
computed from real pixels around it.

Each context is a random square crop of a photo bundled in the scikit-image / scikit-learn wheels
(all of them: nothing is trained), resized to ``context_size``; the crop ``x`` of ``image_size`` px
sits at its centre. ``context_size: null`` lets the task choose: the smallest size whose margin
holds the receptive field of its deepest layer (``posenc.models.receptive_field``); the task calls
:meth:`ContextDataModule.prepare` from its ``setup``, before the test loader is built.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from posenc.config.rules import Rule
from posenc.data.datamodule import IndexedImages, SeededDataModule, check_sizes
from posenc.data.sources.natural import available_photos, natural_crops
from posenc.errors import PosencError, invalid_value

ContextSource = Literal["natural"]
CONTEXT_SOURCES: tuple[str, ...] = get_args(ContextSource)


class ContextDataModule(SeededDataModule):
    """``num_test`` contexts of real images; only a test set (PPP trains nothing)."""

    SOURCES = CONTEXT_SOURCES

    def __init__(
        self,
        source: ContextSource = "natural",
        context_size: Annotated[int, Rule(ge=8)] | None = None,
        min_scale: Annotated[float, Rule(gt=0, le=1)] = 0.5,
        num_train: Literal[0] = 0,
        num_val: int = 0,
        **kwargs: Any,
    ) -> None:
        """``num_train`` is accepted for the run contract and must be 0: nothing is trained; sizes
        and loader options: :class:`SeededDataModule`."""
        super().__init__(source=source, num_train=num_train, num_val=num_val, **kwargs)
        num_test, image_size, batch_size = self.num_test, self.image_size, self.batch_size
        if num_train:
            raise invalid_value("data.num_train", num_train, "expected 0: task=ppp trains nothing")
        check_sizes(1, 0, num_test, batch_size=(batch_size, 1))
        if context_size is not None and context_size < image_size:
            raise invalid_value("data.context_size", context_size, f"expected null or >= data.image_size={image_size}")
        self.context_size, self.min_scale = context_size, float(min_scale)

    def prepare(self, context_size: int) -> None:
        """Fix the contexts' size (when ``data.context_size`` is null) before :meth:`setup` builds them."""
        if self.context_size is None:
            self.context_size = int(context_size)

    def setup(self, stage: str | None = None) -> None:
        if self.test_sets or self.context_size is None:
            return
        photos = sorted(available_photos())
        if not photos:
            raise PosencError("no bundled photos found: install scikit-image and scikit-learn (pip install -e .)")
        images = natural_crops(self.num_test, self.context_size, photos, seed=self.seed + 3, min_scale=self.min_scale)
        self.test_sets = {"contexts": IndexedImages(images)}

    def test_dataloader(self) -> list:
        if self.context_size is None:
            raise PosencError("data.context_size is null and no task chose it (task=ppp does)")
        self.setup("test")
        return super().test_dataloader()
