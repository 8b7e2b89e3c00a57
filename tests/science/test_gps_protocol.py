"""protocol=gps: the ICCV 2021 authors' location classification (Islam, Kowal et al.; facts of
their training script in PAPERS.md). One training step of posenc under the preset equals the same
step written out independently: torchvision's ResNet18 without the stem's max-pool, a 3x3 conv
(padding 1) to one map per cell, global average pooling, cross-entropy, Adam lr 1e-3 betas
(0.5, 0.999), on a batch of 48 canvases with a fresh cell and flip per sample."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers.runs import compose_run
from hydra.utils import instantiate


@pytest.fixture(scope="module")
def gps(tmp_path_factory):
    cfg = compose_run(
        [
            "protocol=gps",
            "data.source=shapes",
            "data.num_train=96",
            "data.num_val=0",
            "data.num_test=2",
            "data.device=cpu",
        ],
        tmp_path_factory.mktemp("gps") / "run",
    )
    torch.manual_seed(0)
    datamodule, task = instantiate(cfg.data), instantiate(cfg.task)
    datamodule.setup("fit")
    task.attach_datamodule(datamodule)
    task.head = task.build_head()
    return cfg, datamodule, task


def test_the_preset_is_the_authors_protocol(gps):
    cfg, datamodule, task = gps
    assert (cfg.backbone.name, cfg.readout.padding, cfg.data.image_size, cfg.data.batch_size) == (
        "resnet18_cifar",
        1,
        96,
        48,
    )
    assert cfg.task.scheduler is None and list(cfg.task.optimizer.betas) == [0.5, 0.999]
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    first = next(iter(loader))
    loader.sampler.set_epoch(1)
    again = next(iter(loader))
    assert first["image"].shape == (48, 3, 96, 96)
    # a fresh cell every epoch: the same patches land elsewhere
    same = {int(i): int(c) for i, c in zip(first["index"], first["cell"])}
    moved = sum(same[int(i)] != int(c) for i, c in zip(again["index"], again["cell"]) if int(i) in same)
    assert moved > 0
    assert len(datamodule.test_sets["canvas"]) == 2 * 9  # the balanced test


def test_the_preset_upsamples_like_the_authors_without_padding(tmp_path):
    """padding=none under the preset: +3 px before the 7x7 stride-2 stem, as in the authors' code
    ((k-1)//2), where posenc's default adds 2 * pad = 6 px; 3x3 convs get +2 px under both."""
    from posenc.models.padding import UpsampledValidConv2d

    cfg = compose_run(["protocol=gps", "padding=none", "data.source=shapes"], tmp_path / "run")
    assert cfg.padding.none_upsample == "authors"
    backbone = instantiate(cfg.backbone)
    convs = [m for m in backbone.modules() if isinstance(m, UpsampledValidConv2d)]
    assert convs[0].kernel_size == (7, 7) and convs[0].extra_pixels() == (3, 3)
    assert {c.extra_pixels() for c in convs[1:]} == {(2, 2)}
    with torch.no_grad():
        assert backbone(torch.rand(1, 3, 96, 96))[0].shape[-1] == 47  # the stem's map: one pixel short of 48
    default = instantiate(compose_run(["padding=none", "backbone=resnet18_cifar"], tmp_path / "other").backbone)
    assert [m for m in default.modules() if isinstance(m, UpsampledValidConv2d)][0].extra_pixels() == (6, 6)
    with torch.no_grad():
        assert default(torch.rand(1, 3, 96, 96))[0].shape[-1] == 48


def test_training_steps_equal_the_authors_loop_written_out(gps):
    """Two steps: Adam's first step is lr x sign(grad) whatever its betas; the second is not."""
    cfg, datamodule, task = gps
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    batches = list(iter(loader))[:2]

    # the authors' network, built here from torchvision, with posenc's initial weights copied in
    resnet = torchvision.models.resnet18(weights=None)
    body = torch.nn.Sequential(
        OrderedDict(
            [
                ("conv1", resnet.conv1),
                ("bn1", resnet.bn1),
                ("relu", resnet.relu),
                ("layer1", resnet.layer1),
                ("layer2", resnet.layer2),
                ("layer3", resnet.layer3),
                ("layer4", resnet.layer4),
            ]
        )
    )
    body.load_state_dict(task.backbone.body.state_dict())
    head = torch.nn.Conv2d(512, 9, 3, padding=1)
    head.load_state_dict(task.head.conv.state_dict())
    params = [*body.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))
    body.train()
    task.train()
    ours = task.configure_optimizers()
    for step, batch in enumerate(batches):
        logits = head(body(batch["image"])).mean(dim=(2, 3))
        loss = F.cross_entropy(logits, batch["cell"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        out = task.training_step(batch, step)
        ours.zero_grad()
        out["loss"].backward()
        ours.step()
        torch.testing.assert_close(out["loss"].detach(), loss.detach(), rtol=1e-5, atol=1e-6)
    for (name, mine), theirs in zip(task.backbone.body.state_dict().items(), body.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(task.head.conv.weight, head.weight, rtol=1e-4, atol=1e-6)


def test_a_gps_run_keeps_the_run_contract(tmp_path):
    from posenc.run.train import run

    metrics = run(
        compose_run(
            [
                "protocol=gps",
                "data.source=shapes",
                "data.num_train=48",
                "data.num_val=0",
                "data.num_test=2",
                "task.max_steps=2",
                "callbacks.progress=null",
            ],
            tmp_path / "r",
        )
    )
    assert metrics["status"] == "completed" and metrics["backbone"] == "resnet18_cifar"
    assert metrics["test/majority"] == pytest.approx(1 / 9)  # the balanced test: every cell as often
    assert (tmp_path / "r" / "metrics.json").is_file() and (tmp_path / "r" / "checkpoints" / "last.ckpt").is_file()
