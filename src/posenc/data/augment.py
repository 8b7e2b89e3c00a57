"""Translation augmentation for the invariance experiments (Islam, Kowal et al., ICCV 2021: "two
crops of one image through the same encoder").

A shift moves the whole image by a random integer offset in ``[-max_shift, max_shift]`` on each
axis; the pixels it uncovers repeat the image's edge (``replicate``). On the uniform canvases of
``data=canvas`` (black, white, mean) the edge is the canvas colour, so a shift moves the object
and changes nothing else; it is the same operation as a random crop of an edge-padded image.
Written here rather than taken from torchvision's ``RandomCrop`` because that draws one offset per
call, and the two views of a batch need one offset per image, batched, on the images' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from posenc.errors import invalid_value


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` ``[B, C, H, W]`` each moved by its own random ``(dy, dx)``, ``|dy|, |dx| <= max_shift``
    (drawn from ``generator``, else torch's global RNG)."""
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise invalid_value("task.shift", max_shift, "expected an int >= 0 (pixels)")
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    device = images.device if generator is None else generator.device
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator, device=device).to(images.device)
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    rows = offsets[0].view(b, 1, 1) + torch.arange(h, device=images.device).view(1, h, 1)  # [B, H, 1]
    cols = offsets[1].view(b, 1, 1) + torch.arange(w, device=images.device).view(1, 1, w)  # [B, 1, W]
    batch = torch.arange(b, device=images.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
