"""Full-reference quality of a luma plane against a reference of the same size: PSNR and SSIM."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.uint8]
PSNR_CAP = 100.0  # identical planes: infinite PSNR, reported as this
SSIM_WINDOW = 8
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def psnr(reference: Plane, test: Plane) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit planes."""
    _same_shape(reference, test)
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255**2 / mse))


def ssim(reference: Plane, test: Plane) -> float:
    """Mean SSIM (Wang et al. 2004) over 8x8 sliding windows with uniform weights, on planes
    average-pooled by round(min(h, w) / 256) as the reference implementation does."""
    _same_shape(reference, test)
    # as in Wang's reference implementation: average-pool by f = round(min(h, w) / 256) first,
    # which matches viewing distance and makes a 720p plane ~9x cheaper
    factor = max(1, round(min(reference.shape) / 256))
    x = _pool(reference.astype(np.float64), factor)
    y = _pool(test.astype(np.float64), factor)
    if min(x.shape) < SSIM_WINDOW:
        return 1.0 if np.array_equal(x, y) else 0.0
    mx, my = _box_mean(x), _box_mean(y)
    sxx = _box_mean(x * x) - mx * mx
    syy = _box_mean(y * y) - my * my
    sxy = _box_mean(x * y) - mx * my
    index = ((2 * mx * my + _C1) * (2 * sxy + _C2)) / (
        (mx * mx + my * my + _C1) * (sxx + syy + _C2)
    )
    return float(index.mean())


def _pool(plane: npt.NDArray[np.float64], f: int) -> npt.NDArray[np.float64]:
    if f == 1:
        return plane
    h, w = plane.shape[0] // f * f, plane.shape[1] // f * f
    return plane[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _box_mean(plane: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Mean over every SSIM_WINDOW x SSIM_WINDOW window, via a summed-area table."""
    k = SSIM_WINDOW
    table = np.pad(plane.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
    return sums / (k * k)


def _same_shape(reference: Plane, test: Plane) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"planes differ in size: {reference.shape} vs {test.shape}")
