"""posenc's PosENet readout against an independent statement of the authors' protocol.

The statement below is written from the protocol facts (PosENet, Islam et al. ICLR 2020, Sec. 3.2
and the authors' public code as summarised in PAPERS.md §1), not from posenc's code and not copied
from theirs: one readout per target map (k x k conv with padding 0 -> BatchNorm(1) -> sigmoid,
Xavier-uniform weights), the taps resized to 28 x 28 with bilinear ``align_corners=True`` and
concatenated, the readout's map upsampled to the image with ``align_corners=False``, MSE against
the fixed map broadcast over the batch, SGD lr 0.1, momentum 0.9, weight decay 1e-4, each map
trained on its own. posenc fuses the five readouts into one module and computes the upsampled MSE
in closed form; on the same features, weights and batches both must give the same losses and
predictions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers.runs import compose_run
from hydra.utils import instantiate

from posenc.tasks.schedules import milestones_at

SIZE = 112
TARGETS = ["H", "V", "G"]


class AuthorsReadout(nn.Module):
    """One map's readout, as the authors describe it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, padding=0)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, taps: list[torch.Tensor], image_size: int) -> torch.Tensor:
        x = torch.cat([F.interpolate(t, size=(28, 28), mode="bilinear", align_corners=True) for t in taps], dim=1)
        y = torch.sigmoid(self.bn(self.conv(x)))
        return F.interpolate(y, size=(image_size, image_size), mode="bilinear", align_corners=False)


def test_readout_matches_the_authors_forward_and_training_steps(tmp_path) -> None:
    cfg = compose_run(["backbone=tiny", f"data.image_size={SIZE}", f"task.targets=[{','.join(TARGETS)}]"], tmp_path)
    torch.manual_seed(0)
    task = instantiate(cfg.task)
    ours = task.readout
    theirs = []
    for j in range(len(TARGETS)):  # the same initial weights, one readout per map
        head = AuthorsReadout(task.backbone.out_channels)
        with torch.no_grad():
            head.conv.weight.copy_(ours.net[0].weight[j : j + 1])
            head.conv.bias.copy_(ours.net[0].bias[j : j + 1])
        theirs.append(head)
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
    our_opt = task.optimizer_factory(params=ours.parameters())
    their_opts = [torch.optim.SGD(h.parameters(), **sgd) for h in theirs]
    assert our_opt.defaults["lr"] == sgd["lr"] and our_opt.defaults["momentum"] == sgd["momentum"]
    assert our_opt.defaults["weight_decay"] == sgd["weight_decay"]

    generator = torch.Generator().manual_seed(1)
    batches = [torch.rand(6, 3, SIZE, SIZE, generator=generator) for _ in range(4)]
    ours.train()
    for step, images in enumerate(batches):
        with torch.no_grad():
            taps = task.backbone(images)
        per_target = task.loss(ours.maps(task.encode(images)))
        our_opt.zero_grad()
        per_target.sum().backward()
        our_opt.step()
        for j, (head, opt) in enumerate(zip(theirs, their_opts)):
            head.train()
            pred = head(taps, SIZE)
            loss = F.mse_loss(pred, task.targets[j].expand_as(pred))
            opt.zero_grad()
            loss.backward()
            opt.step()
            torch.testing.assert_close(per_target[j], loss, rtol=1e-5, atol=1e-6, msg=f"step {step} {TARGETS[j]}")

    ours.eval()
    images = torch.rand(3, 3, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        our_pred = task.predict_maps(task.encode(images))
        taps = task.backbone(images)
        for j, head in enumerate(theirs):
            their_pred = head.eval()(taps, SIZE)[:, 0]
            torch.testing.assert_close(our_pred[:, j], their_pred, rtol=1e-4, atol=1e-5)
    # the maps moved: the steps were real training steps, not a no-op
    assert (our_pred[:, 0] - our_pred[:, 0].mean()).abs().max() > 1e-3


def test_lr_drop_falls_where_the_papers_epoch_10_of_15_does() -> None:
    # 10,553 DUTS-TR images / batch 32 = 330 steps per epoch; 15 epochs = 4,950 steps
    assert milestones_at([0.6667], 15 * 330) == [10 * 330]
    assert milestones_at([0.6667], 1000) == [667]
