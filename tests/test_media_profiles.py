"""Profiles, ladder fitting, frame-rate capping and the quality metrics: pure functions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.cadence import keeps_frame
from media.errors import InvalidProfile, MediaError
from media.profiles import DEFAULT_LADDER, STANDARD, Profile, fit, parse_profiles, plan_ladder
from media.quality import PSNR_CAP, psnr, ssim


def test_default_ladder_is_720_480_360() -> None:
    assert [p.name for p in DEFAULT_LADDER] == ["720p", "480p", "360p"]
    assert parse_profiles("720p,480p,360p") == DEFAULT_LADDER


def test_parse_rates_fps_and_codec() -> None:
    a, b, c, d = parse_profiles("480p:800k, 360p30, 1000p:2.5M, 240p/hevc")
    assert (a.height, a.bitrate, a.fps) == (480, 800_000, None)
    assert (b.height, b.bitrate, b.fps) == (360, STANDARD["360p"].bitrate, Fraction(30))
    assert (c.height, c.bitrate) == (1000, 2_500_000)
    assert d.codec == "hevc"


@pytest.mark.parametrize(
    "text",
    ["", "720p,", "abc", "720", "1000p", "721p:1M", "720p,720p", "720p:5", "720p/vp8", "720p500"],
)
def test_bad_profiles_raise_invalid_profile(text: str) -> None:
    with pytest.raises(InvalidProfile):
        parse_profiles(text)
    assert issubclass(InvalidProfile, MediaError)


@pytest.mark.parametrize(
    ("source", "profile", "expected"),
    [
        ((1920, 1080), "720p", (1280, 720)),
        ((1280, 720), "480p", (854, 480)),
        ((640, 360), "720p", (640, 360)),  # never upscale
        ((640, 480), "360p", (480, 360)),  # 4:3 keeps 4:3
        ((720, 1280), "480p", (480, 854)),  # portrait: the short side is the profile's height
        ((1280, 545), "360p", (846, 360)),
        ((321, 241), "720p", (320, 240)),  # odd source: even output
    ],
)
def test_fit_keeps_aspect_and_never_upscales(
    source: tuple[int, int], profile: str, expected: tuple[int, int]
) -> None:
    spec = fit(STANDARD[profile], *source)
    assert (spec.width, spec.height) == expected


@given(st.integers(16, 4096), st.integers(16, 4096), st.sampled_from(sorted(STANDARD)))
def test_fit_properties(width: int, height: int, name: str) -> None:
    spec = fit(STANDARD[name], width, height)
    assert spec.width % 2 == 0 and spec.height % 2 == 0
    assert spec.width <= width and spec.height <= height
    assert min(spec.width, spec.height) <= STANDARD[name].height
    # aspect ratio within the rounding of the long side to an even number
    if width >= height:
        assert abs(spec.width - spec.height * width / height) <= 2
    else:
        assert abs(spec.height - spec.width * height / width) <= 2


def test_plan_drops_rungs_that_collapse_on_a_small_source() -> None:
    specs = plan_ladder(DEFAULT_LADDER, 320, 240)
    assert [(s.name, s.width, s.height) for s in specs] == [("720p", 320, 240)]
    with pytest.raises(InvalidProfile):
        plan_ladder((), 320, 240)


def test_profile_validation() -> None:
    with pytest.raises(InvalidProfile):
        Profile("x", 720, 10)
    with pytest.raises(InvalidProfile):
        Profile("x", 720, 1_000_000, fps=Fraction(0))


def test_cadence_halves_60_to_30_whatever_the_cut() -> None:
    step = Fraction(1, 60)
    kept = [i for i in range(120) if keeps_frame(i * step, step, Fraction(30))]
    assert kept == list(range(0, 120, 2))
    assert all(keeps_frame(i * step, step, None) for i in range(10))
    assert all(keeps_frame(i * step, step, Fraction(60)) for i in range(10))


def test_cadence_25_to_15_keeps_three_of_five() -> None:
    step = Fraction(1, 25)
    kept = [i for i in range(50) if keeps_frame(i * step, step, Fraction(15))]
    assert len(kept) == 30


def test_psnr_and_ssim_separate_right_from_wrong() -> None:
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 256, (120, 160), dtype=np.uint8)
    assert psnr(ref, ref) == PSNR_CAP
    assert ssim(ref, ref) == pytest.approx(1.0)
    noisy = np.clip(ref.astype(int) + rng.integers(-3, 4, ref.shape), 0, 255).astype(np.uint8)
    other = rng.integers(0, 256, (120, 160), dtype=np.uint8)
    assert 38 < psnr(ref, noisy) < 45
    assert psnr(ref, other) < 12
    assert ssim(ref, noisy) > 0.9 > 0.1 > ssim(ref, other)
    with pytest.raises(ValueError):
        psnr(ref, ref[:10])


def _ssim_by_windows(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM as its definition reads: average-pool by f, then each 8x8 window's means,
    variances and covariance in float64, from the window's own pixels."""
    f = max(1, round(min(reference.shape) / 256))
    h, w = reference.shape[0] // f * f, reference.shape[1] // f * f
    x, y = (p[:h, :w].astype(np.float64).reshape(h // f, f, w // f, f).mean(axis=(1, 3))
            for p in (reference, test))  # fmt: skip
    a, b = (np.lib.stride_tricks.sliding_window_view(p, (8, 8)) for p in (x, y))
    ma, mb = a.mean(axis=(2, 3)), b.mean(axis=(2, 3))
    va, vb = a.var(axis=(2, 3)), b.var(axis=(2, 3))
    cov = ((a - ma[..., None, None]) * (b - mb[..., None, None])).mean(axis=(2, 3))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(scores.mean())


@pytest.mark.parametrize("shape", [(24, 40), (90, 61), (400, 384)])  # the last is pooled by 2
def test_ssim_is_the_mean_over_every_window(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    ref = rng.integers(0, 256, shape, dtype=np.uint8)
    smooth = np.clip(ref.astype(int) + rng.integers(-12, 13, shape), 0, 255).astype(np.uint8)
    for test in (ref, smooth, 255 - ref, np.zeros(shape, np.uint8)):
        assert ssim(ref, test) == pytest.approx(_ssim_by_windows(ref, test), abs=1e-9)


def test_ssim_of_large_pooled_planes_is_exact() -> None:
    """A 4K plane is pooled by 8: its sums no longer fit 32 bits, so it takes the wide path."""
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 256, (2160, 3840), dtype=np.uint8)
    assert ssim(ref, ref) == 1.0
    assert ssim(ref, 255 - ref) < 0.1
