"""The closed-form upsampled MSE equals upsample-then-MSE, values and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from posenc.data.position_maps import make_targets
from posenc.models.losses import UpsampledMSE, interpolation_matrix


def test_interpolation_matrix_is_torch_bilinear_along_an_axis():
    x = torch.rand(3, 26, 21, dtype=torch.float64)
    up = F.interpolate(x[None], size=(224, 200), mode="bilinear", align_corners=False)[0]
    ours = interpolation_matrix(26, 224) @ x @ interpolation_matrix(21, 200).T
    torch.testing.assert_close(ours, up, rtol=0, atol=1e-12)


def test_closed_form_loss_and_gradients_match_upsampling():
    targets = make_targets(["H", "V", "G", "HS", "VS"], 64)
    loss = UpsampledMSE(targets)
    pred = torch.rand(6, 5, 13, 13, requires_grad=True)
    ours = loss(pred)
    ref = F.mse_loss(
        F.interpolate(pred, size=64, mode="bilinear", align_corners=False),
        targets.expand(6, -1, -1, -1),
        reduction="none",
    ).mean(dim=(0, 2, 3))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    (g_ours,) = torch.autograd.grad(ours.sum(), pred)
    (g_ref,) = torch.autograd.grad(ref.sum(), pred)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-8)
    assert ours[0] != ours[1]  # per target, not pooled
