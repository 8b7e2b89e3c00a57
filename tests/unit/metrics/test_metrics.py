"""Tests for posenc.metrics.spearman: tie-aware ranks, per-image Spearman (SPC) and MAE of PosENet,
checked against scipy.stats (rankdata / spearmanr) and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from posenc.data.position_maps import make_target
from posenc.metrics.spearman import CONSTANT_ATOL, average_ranks, mae_per_image, pearson_rows, spearman_per_image


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scipy_spearman(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    p = pred.double().numpy().reshape(pred.shape[0], -1)
    t = np.broadcast_to(target.double().numpy(), pred.shape).reshape(pred.shape[0], -1)
    return np.array([spearmanr(p[i], t[i])[0] for i in range(p.shape[0])])


# --------------------------------------------------------------------------- average_ranks
@pytest.mark.parametrize("high", [2, 5, 1000])
def test_average_ranks_matches_scipy_with_ties(high: int) -> None:
    x = torch.randint(0, high, (4, 500), generator=_gen(high))
    r = average_ranks(x)
    assert r.dtype == torch.float64 and r.shape == (4, 500)
    np.testing.assert_array_equal(r.numpy(), rankdata(x.numpy(), method="average", axis=1))


def test_average_ranks_floats_and_small_cases() -> None:
    x = torch.randn(3, 257, generator=_gen(0))
    x[:, ::3] = x[:, 1::3][:, : x[:, ::3].shape[1]]  # many exact float ties
    np.testing.assert_array_equal(average_ranks(x).numpy(), rankdata(x.numpy(), axis=1))
    assert average_ranks(torch.tensor([[10.0, 30.0, 20.0, 20.0]])).tolist() == [[1.0, 4.0, 2.5, 2.5]]
    assert average_ranks(torch.full((2, 5), 7.0)).tolist() == [[3.0] * 5] * 2  # all tied: (n + 1) / 2
    assert average_ranks(torch.tensor([[-0.0, 0.0, -1.0]])).tolist() == [[2.5, 2.5, 1.0]]  # -0 == 0


def test_average_ranks_of_the_h_map() -> None:
    h = make_target("H", 16).reshape(1, -1)  # 16 columns, 16 equal values each
    r = average_ranks(h)
    np.testing.assert_array_equal(r.numpy(), rankdata(h.numpy(), axis=1))
    col_rank = 16 * torch.arange(16, dtype=torch.float64) + 8.5  # mean of 16 consecutive ranks
    assert torch.equal(r.reshape(16, 16), col_rank.expand(16, 16))


# --------------------------------------------------------------------------- spearman_per_image
@pytest.mark.parametrize("high", [3, 8, 50])
def test_spearman_matches_scipy_integer_maps(high: int) -> None:
    pred = torch.randint(0, high, (6, 64, 64), generator=_gen(high)).float()
    target = torch.randint(0, high, (6, 64, 64), generator=_gen(100 + high)).float()
    # make it non-trivial: half of each target follows the prediction
    target[:, :32] = pred[:, :32]
    got = spearman_per_image(pred, target)
    assert got.dtype == torch.float64 and got.shape == (6,)
    want = _scipy_spearman(pred, target)
    assert np.all(np.abs(want) > 0.1)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_spearman_matches_scipy_against_broadcast_h_map() -> None:
    h = make_target("H", 64)  # 64 distinct values, each tied 64 times
    noise = torch.randint(0, 20, (5, 1, 64, 64), generator=_gen(1)).float()
    pred = noise + torch.tensor([0.0, 5.0, 20.0, 100.0, -30.0]).view(5, 1, 1, 1) * h
    got = spearman_per_image(pred, h)
    want = _scipy_spearman(pred, h)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    assert abs(got[0]) < 0.05 and got[3] > 0.95 and got[4] < -0.8  # spread of real values
    assert torch.all(got[1:4].diff() > 0)


def test_spearman_target_shapes() -> None:
    v = make_target("V", 32)
    pred = torch.rand(3, 1, 32, 32, generator=_gen(2)) + v
    a = spearman_per_image(pred, v)  # [S, S] broadcast over [B, 1, S, S]
    b = spearman_per_image(pred, v[None, None])  # [1, 1, S, S]
    c = spearman_per_image(pred, v.expand(3, 1, 32, 32).clone())  # same shape
    d = spearman_per_image(pred[:, 0], v)  # [B, S, S]
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    np.testing.assert_allclose(a.numpy(), _scipy_spearman(pred, v), atol=1e-12)


def test_spearman_large_map_with_ties() -> None:
    """256x256 with heavy ties: where int32 rank sums would overflow (torchmetrics)."""
    h = make_target("H", 256)
    pred = torch.randint(0, 4, (2, 256, 256), generator=_gen(3)).float() + 3 * h
    np.testing.assert_allclose(spearman_per_image(pred, h).numpy(), _scipy_spearman(pred, h), atol=1e-12)


def test_spearman_is_rank_invariant() -> None:
    g = make_target("G", 48)
    pred = torch.randn(4, 48, 48, generator=_gen(4)).double() * 0.3 + g
    base = spearman_per_image(pred, g)
    torch.testing.assert_close(spearman_per_image(torch.exp(3 * pred), g), base, rtol=0, atol=1e-12)
    torch.testing.assert_close(spearman_per_image(pred, g**3 + 2), base, rtol=0, atol=1e-12)
    # ...while Pearson on the values is not rank invariant
    flat, tgt = pred.reshape(4, -1), g.double().reshape(1, -1).expand(4, -1)
    assert not torch.allclose(pearson_rows(flat, tgt), pearson_rows(torch.exp(3 * flat), tgt), atol=1e-3)


@pytest.mark.parametrize("name", ["H", "V", "G", "HS", "VS"])
def test_spearman_perfect_and_reversed(name: str) -> None:
    t = make_target(name, 64)
    same = spearman_per_image(t.expand(3, 64, 64), t)
    rev = spearman_per_image((1 - t)[None], t)
    torch.testing.assert_close(same, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(rev, -torch.ones(1, dtype=torch.float64), rtol=0, atol=1e-12)


def test_spearman_constant_maps_score_zero() -> None:
    h = make_target("H", 32)
    pred = torch.stack([torch.full((32, 32), 0.3), torch.rand(32, 32, generator=_gen(5)) + h, torch.zeros(32, 32)])
    got = spearman_per_image(pred, h)
    assert got[0] == 0 and got[2] == 0 and got[1] > 0.5  # constant prediction -> 0
    assert torch.equal(spearman_per_image(pred[1:2], torch.full((32, 32), 0.5)), torch.zeros(1, dtype=torch.float64))


def test_spearman_roundoff_constant_scores_zero() -> None:
    """A map constant up to float round-off (e.g. an upsampled constant) is constant, not noise."""
    h = make_target("H", 64)
    wobble = 0.5 + 1e-9 * torch.randn(3, 64, 64, generator=_gen(6), dtype=torch.float64)
    assert (wobble.amax() - wobble.amin()).item() > 0  # not literally constant...
    assert np.all(np.abs(_scipy_spearman(wobble, h)) > 0)  # ...and scipy would rank the noise
    assert torch.equal(spearman_per_image(wobble, h), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(spearman_per_image(h[None].double(), wobble[0]), torch.zeros(1, dtype=torch.float64))
    # just above the threshold a tiny but real ramp is ranked normally
    small = 0.5 + 10 * CONSTANT_ATOL * h.double()
    torch.testing.assert_close(
        spearman_per_image(small[None], h), torch.ones(1, dtype=torch.float64), rtol=0, atol=1e-12
    )


# --------------------------------------------------------------------------- mae_per_image
def test_mae_matches_numpy() -> None:
    t = make_target("G", 40)
    pred = torch.rand(5, 1, 40, 40, generator=_gen(7))
    got = mae_per_image(pred, t)
    want = np.abs(pred.numpy() - t.numpy()[None, None]).reshape(5, -1).mean(axis=1)
    assert got.shape == (5,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=0)
    per = torch.rand(5, 1, 40, 40, generator=_gen(8))
    np.testing.assert_allclose(
        mae_per_image(pred, per).numpy(), np.abs(pred.numpy() - per.numpy()).reshape(5, -1).mean(axis=1), rtol=1e-6
    )
    assert torch.equal(mae_per_image(t[None], t), torch.zeros(1))
    torch.testing.assert_close(mae_per_image(torch.ones(2, 40, 40), torch.zeros(40, 40)), torch.ones(2))


def test_spearman_is_bounded_and_one_for_identical_maps() -> None:
    x = torch.randint(0, 5, (4, 64, 64), generator=_gen(0)).float()
    g = make_target("G", 8)
    got = torch.cat([spearman_per_image(x, x), spearman_per_image(g[None], g)])
    assert torch.all(got.abs() <= 1)
    torch.testing.assert_close(got, torch.ones_like(got), rtol=0, atol=1e-12)
