"""The own-model example of docs/reference.md and ``backbone=module``'s default: any factory returning an
``nn.Module`` plugs in the same way (``backbone.target=my_package.my_module.make_net``)."""

import torch.nn as nn


class Net(nn.Module):
    """Three zero-padded conv stages; tap them as ``backbone.taps=[stage1,stage2,stage3]``."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.stage2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.stage3 = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU())

    def forward(self, x):
        return self.stage3(self.stage2(self.stage1(x)))


def make_net(width: int = 16) -> nn.Module:
    return Net(width)
