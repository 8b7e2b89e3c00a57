"""Stand-in "trained" weights for machines where no pretrained file can be had.

Random-init features make the PosENet readout's job easy (it converges in a few dozen steps);
trained features do not (issue 6: a trained VGG16 needs ~4x the steps). To choose and test the
readout budget without ImageNet weights, a backbone is trained here for a few hundred Adam steps to
tell which bundled training photo a random crop comes from (12 classes; global average pooling
then a linear layer, so the features must become discriminative). Its weights are saved in the
layout ``backbone.weights=<file>`` loads (torchvision's keys), and are used like a trained backbone.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from posenc.data.sources.natural import TRAIN_PHOTOS, natural_crops
from posenc.io import atomic_save
from posenc.models.backbones import backbone_entry
from posenc.models.padding import PaddingSpec


def train_photo_id(
    name: str = "tiny",
    steps: int = 200,
    image_size: int = 64,
    batch_size: int = 32,
    lr: float = 1e-3,
    num_images: int = 2048,
    seed: int = 0,
    padding: str = "zeros",
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Train ``name``'s conv body (+ GAP + linear, dropped afterwards) on photo identity; return
    its state dict under torchvision's keys and the per-step training loss."""
    torch.manual_seed(seed)
    body, _ = backbone_entry(name).build(None, False)
    PaddingSpec(padding).apply(body)
    width = [m for m in body.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    model = nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, len(TRAIN_PHOTOS)))
    images, labels = natural_crops(num_images, image_size, TRAIN_PHOTOS, seed=seed + 1000, return_labels=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=generator)
        x = images[idx].float() / 255.0
        flip = torch.rand(batch_size, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = nn.functional.cross_entropy(model(x), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    prefix = "features." if name.startswith("vgg") else ""
    state = {prefix + k: v.detach().clone() for k, v in body.state_dict().items()}
    return state, losses


def save_photo_id_weights(path: str | Path, **kwargs) -> Path:
    """:func:`train_photo_id`, saved as a state dict file for ``backbone.weights=<path>``."""
    state, _ = train_photo_id(**kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(state, path)
    return path
