"""Location-dependent segmentation (``task=location_seg``; Islam et al., IJCV 2024): the pixels of
a patch pasted into cell c of a g x g canvas are labelled ``1 + c``, the canvas 0; so the correct
class of a pixel depends on where the object is, which a network can only tell from position it
encodes (padding), not from the object's appearance. mIoU and pixel accuracy overall and per ring of
the object's cell (``ring0`` = the border cells)."""

from __future__ import annotations

import torch

from posenc.data.canvas import location_seg_labels
from posenc.metrics.binned import bin_names_rings, ring_of_cell
from posenc.tasks.segmentation import SegmentationTask


class LocationSegmentationTask(SegmentationTask):
    """Per-pixel cell labels of the pasted object; distance bins are rings of cells."""

    needs_data = ("num_cells", "data=canvas")

    def _grid(self) -> int:
        self.check_data(self.datamodule)
        return self.datamodule.spec.cells_per_side

    def num_outputs(self) -> int:
        return 1 + self._grid() ** 2

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return location_seg_labels(batch["object_mask"], batch["cell"])

    def class_names(self) -> list[str]:
        """``background``, then ``cell (row, col)`` for label ``1 + row * g + col``."""
        g = self._grid()
        return ["background", *(f"cell ({c // g}, {c % g})" for c in range(g * g))]

    def bin_names(self) -> list[str]:
        return bin_names_rings(self._grid())

    def bins(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rings = ring_of_cell(batch["cell"], self._grid())
        return rings.view(-1, 1, 1).expand(-1, self.image_size, self.image_size)
