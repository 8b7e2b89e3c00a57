"""PPP (Lin et al., ICML 2023): zero without padding, clearly non-zero with zero padding, a
reference that is the padded crop's features away from its border, one-line errors, the figure."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from posenc.errors import PosencError
from posenc.metrics.ppp import crop_center, features_and_reference, ppp_from_moments, ppp_stats
from posenc.models.backbones import build_backbone
from posenc.models.receptive_field import context_margin, reference_crop, tap_geometries, tap_output_sizes
from posenc.viz.figures import ppp_figure, save_figure

CROP = 160  # none_shrink tiny needs >= 140 px for f5 (its receptive field)
IMAGES = 8


@pytest.fixture(scope="module")
def setup() -> dict:
    """One set of tiny weights with zero padding and with none_shrink, smooth random contexts with
    the zero-padded backbone's margin (64 px: f5 needs 69.5 - 7.5 = 62), and both backbones' PPP."""
    torch.manual_seed(0)
    shrink = build_backbone("tiny", "none_shrink")
    zeros = build_backbone("tiny", "zeros")
    zeros.load_state_dict(shrink.state_dict())
    margin = context_margin(zeros, CROP)
    assert margin == 64
    generator = torch.Generator().manual_seed(1)
    side = CROP + 2 * margin
    contexts = F.avg_pool2d(torch.rand(IMAGES, 3, side + 4, side + 4, generator=generator), 5, stride=1)
    jumps = [g.jump for g in tap_geometries(zeros).values()]
    out = {"zeros": zeros, "none_shrink": shrink, "margin": margin, "contexts": contexts, "jumps": jumps}
    for name in ("zeros", "none_shrink"):
        features, reference = features_and_reference(out[name], contexts, CROP, margin, jumps)
        out[f"{name}/taps"] = (features, reference)
        out[f"{name}/stats"] = [ppp_stats(f, r) for f, r in zip(features, reference)]
    return out


def test_same_weights(setup: dict) -> None:
    zeros, shrink = setup["zeros"], setup["none_shrink"]
    assert all(torch.equal(a, b) for a, b in zip(zeros.state_dict().values(), shrink.state_dict().values()))


def test_no_padding_no_ppp(setup: dict) -> None:
    # none_shrink pads nothing: the crop's features are its context's, shifted by margin / jump.
    stats = setup["none_shrink/stats"]
    assert len(stats) == 5
    for tap, s in zip(setup["none_shrink"].tap_names, stats):
        assert s["pattern"].abs().max().item() < 1e-5, tap
        assert s["snr"] < 1e-9, tap
        assert s["variance"] > 0, tap


def test_misaligned_reference_is_not_zero(setup: dict) -> None:
    # the reference one jump off (f3: 4 px): the alignment test above can fail
    features, _ = setup["none_shrink/taps"]
    jump = setup["jumps"][2]
    with torch.no_grad():
        context_tap = setup["none_shrink"](setup["contexts"])[2]
    wrong = reference_crop(context_tap, setup["margin"] + jump, jump, tuple(features[2].shape[-2:]))
    assert ppp_stats(features[2], wrong)["snr"] > 1e-3


def test_zero_padding_ppp(setup: dict) -> None:
    # measured (seed 0/1, 8 images, crop 160): snr f1..f5 = 1.31, 3.12, 5.51, 19.3, 101
    for tap, s, none in zip(setup["zeros"].tap_names, setup["zeros/stats"], setup["none_shrink/stats"]):
        assert s["snr"] > 0.5, tap
        assert s["snr"] > 100 * none["snr"], tap
        profile = s["border_profile"]
        assert profile[0] == max(profile) > 1.0, tap
        assert profile[-1] < 1e-3 * profile[0], tap  # the centre sees no padding (see below)
        assert s["heatmap"].shape == s["pattern"].shape[-2:]


def test_reference_equals_padded_features_inside(setup: dict) -> None:
    """Units whose receptive field lies inside the crop never see its padding: there the zero-padded
    crop's features equal the reference (a far stricter test than the mean pattern's)."""
    features, reference = setup["zeros/taps"]
    sizes = tap_output_sizes(setup["zeros"], CROP)
    for (tap, g), f, r in zip(tap_geometries(setup["zeros"]).items(), features, reference):
        inside = [i for i in range(sizes[tap]) if g.centre(i) - g.radius >= 0 and g.centre(i) + g.radius <= CROP - 1]
        assert inside, tap
        lo, hi = inside[0], inside[-1] + 1
        # the brief's rule: farther than radius / jump + 1 from the tap's border is inside
        assert lo <= math.ceil(g.radius / g.jump + 1) and hi >= sizes[tap] - math.ceil(g.radius / g.jump + 1)
        torch.testing.assert_close(f[..., lo:hi, lo:hi], r[..., lo:hi, lo:hi], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(f[..., 0, :], r[..., 0, :], rtol=1e-3, atol=1e-4), tap  # the border differs


def test_ppp_stats_literal() -> None:
    reference = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1).expand(2, 1, 3, 3).clone()  # variance 1 everywhere
    features = reference.clone()
    features[:, :, 0, :] += 0.5  # top row: +0.5 in both images
    stats = ppp_stats(features, reference)
    assert stats["variance"] == 1.0
    assert stats["energy"] == pytest.approx(0.25 * 3 / 9)
    assert stats["snr"] == pytest.approx(0.25 * 3 / 9)
    assert stats["border_profile"] == pytest.approx([0.5 * 3 / 8, 0.0])  # 3 of the 8 ring-0 cells
    assert stats["heatmap"][0].tolist() == [0.5, 0.5, 0.5]
    assert stats["second_moment"] == 2.0  # (0^2 + 2^2) / 2
    assert stats["rel_energy"] == pytest.approx(0.25 * 3 / 9 / 2.0)
    moments = ppp_from_moments(features.mean(0), reference.mean(0), reference.pow(2).mean(0))
    assert moments["snr"] == pytest.approx(stats["snr"])
    assert moments["rel_energy"] == pytest.approx(stats["rel_energy"])
    assert moments["border_profile"] == pytest.approx(stats["border_profile"])


def test_ppp_stats_degenerate() -> None:
    same = torch.ones(3, 2, 4, 4)
    assert ppp_stats(same, same)["snr"] == 0.0  # no energy
    moved = same + 1.0
    stats = ppp_stats(moved, same)  # energy but no variance
    assert math.isnan(stats["snr"]) and math.isnan(stats["border_profile"][0])
    assert stats["rel_energy"] == 1.0  # the second moment stays: the pattern is as large as the features


def test_relative_energy_ignores_a_collapsed_variance() -> None:
    """Features that barely vary between images (deep random nets) blow the SNR up; the relative
    energy of the same pattern does not move."""
    torch.manual_seed(0)
    pattern = torch.zeros(1, 4, 6, 6)
    pattern[..., 0, :] = 0.1
    base = 5.0 + torch.randn(1, 4, 6, 6)
    snrs = []
    for spread in (1.0, 0.01):
        reference = base + spread * torch.randn(32, 4, 6, 6)
        stats = ppp_stats(reference + pattern, reference)
        snrs.append(stats["snr"])
        assert stats["rel_energy"] == pytest.approx((0.1**2 / 6) / reference.double().pow(2).mean().item(), rel=1e-4)
        assert 5e-5 < stats["rel_energy"] < 1e-4
    assert snrs[0] < 0.01 and snrs[1] > 10  # the same pattern, 10^4 times louder by the SNR


def test_shape_mismatch_is_one_line_error() -> None:
    with pytest.raises(
        PosencError,
        match=r"features.shape=\(2, 3, 4, 4\) is not valid: expected the reference's "
        r"shape \(2, 3, 5, 4\)",
    ) as info:
        ppp_stats(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 5, 4))
    assert "\n" not in str(info.value)
    with pytest.raises(PosencError, match="reference.shape"):
        ppp_from_moments(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5), torch.zeros(3, 4, 4))


def test_crop_center() -> None:
    contexts = torch.arange(2 * 10 * 10.0).view(2, 1, 10, 10)
    assert torch.equal(crop_center(contexts, 3, 4), contexts[..., 3:7, 3:7])
    with pytest.raises(
        PosencError,
        match=r"data.context_size=10 is not valid: .* at least 12 px \(crop 4 \+ 2 x "
        r"margin 4\)",
    ):
        crop_center(contexts, 4, 4)


def test_margin_not_a_multiple_of_the_jump(setup: dict) -> None:
    with pytest.raises(PosencError, match="multiple"):
        features_and_reference(setup["zeros"], setup["contexts"][..., 2:, 2:], CROP, 62, setup["jumps"])


def test_figure_renders(setup: dict, tmp_path: Path) -> None:
    taps = setup["zeros"].tap_names
    stats = setup["zeros/stats"]
    fig = ppp_figure(
        {t: s["heatmap"] for t, s in zip(taps, stats)}, {t: s["border_profile"] for t, s in zip(taps, stats)}
    )
    assert len(fig.axes) == 3 * len(taps)  # heatmap, its colorbar, profile
    path = save_figure(fig, tmp_path / "ppp.png")
    assert path.is_file() and path.stat().st_size > 1000
