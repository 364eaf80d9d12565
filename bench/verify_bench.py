"""What the gateway's checks of one segment's ladder cost (node.gateway.checks): the full check
(decode the source and every rendition, thumbnails of every frame, PSNR and SSIM on sampled
frames) and the cheap one (containers only), with castnet's quality metrics and, as the baseline
in the same run, the float64 formulation they replaced (PSNR from a float mean of squares; SSIM
from summed-area tables of float64 planes): the verdicts must agree, the time is what differs.

    .venv/bin/python bench/verify_bench.py [--rounds 7] [--json]

Rows: a 2 s 640x360 segment -> 360p,240p and a 2 s 1280x720 segment -> 720p,480p,360p (the two
ladders of bench/e2e_bench.py), transcoded once; then per round, alternating which goes first,
the full check with each metric set and the cheap check; medians of wall and CPU time, in this
process on the cores it is given (`taskset -c 0` to see one core's figures).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import media.verify as verify
from media.profiles import parse_profiles
from media.quality import PSNR_CAP, SSIM_WINDOW, Plane
from media.segmenter import segment
from media.transcoder import transcode
from media.verify import Claim, cheap_verdicts, verify_renditions
from node.local.demo import generate_clip

CONFIGS = {"360p": ("640x360", "360p,240p"), "720p": ("1280x720", "720p,480p,360p")}
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def float_psnr(reference: Plane, test: Plane) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255**2 / mse))


def float_ssim(reference: Plane, test: Plane) -> float:
    f = max(1, round(min(reference.shape) / 256))
    h, w = reference.shape[0] // f * f, reference.shape[1] // f * f
    x, y = (p[:h, :w].astype(np.float64).reshape(h // f, f, w // f, f).mean(axis=(1, 3))
            for p in (reference, test))  # fmt: skip
    if min(x.shape) < SSIM_WINDOW:
        return 1.0 if np.array_equal(x, y) else 0.0

    def box_mean(plane: np.ndarray) -> np.ndarray:
        k = SSIM_WINDOW
        table = np.pad(plane.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return (table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]) / (k * k)

    mx, my = box_mean(x), box_mean(y)
    sxx, syy, sxy = box_mean(x * x) - mx * mx, box_mean(y * y) - my * my, box_mean(x * y) - mx * my
    index = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx * mx + my * my + C1) * (sxx + syy + C2))
    return float(index.mean())


@contextmanager
def metrics(name: str) -> Iterator[None]:
    """media.verify's PSNR and SSIM swapped for the float64 baseline while `name` is "float"."""
    saved = verify.psnr, verify.ssim
    if name == "float":
        verify.psnr, verify.ssim = float_psnr, float_ssim
    try:
        yield
    finally:
        verify.psnr, verify.ssim = saved


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def bench(name: str, rounds: int, work: Path) -> dict[str, Any]:
    size, profiles = CONFIGS[name]
    clip = generate_clip(work / f"{name}.mp4", size, 2.0)
    seg = next(iter(segment(clip)))
    result = transcode(seg.data, parse_profiles(profiles), preset="veryfast")
    claims = [(r.data, Claim.of(r), r.name) for r in result.renditions]
    paths: dict[str, Callable[[int], Any]] = {}
    for metric in ("castnet", "float"):

        def full(seed: int, metric: str = metric) -> Any:
            with metrics(metric):  # the same frames drawn for both in a round
                return verify_renditions(claims, seg.data, rng=random.Random(seed))

        paths[f"full, {metric} metrics"] = full
    paths["cheap"] = lambda seed: cheap_verdicts(claims, seg.data)
    samples: dict[str, list[tuple[float, float]]] = {p: [] for p in paths}
    names = list(paths)
    for r in range(rounds):
        scores = {}
        for path in names[r % len(names) :] + names[: r % len(names)]:
            wall, cpu, verdicts = timed(lambda: paths[path](r))  # noqa: B023 - called here
            if not all(v.ok for v in verdicts):
                raise RuntimeError(f"{path}: a right rendition failed its check: {verdicts}")
            samples[path].append((wall, cpu))
            if path.startswith("full"):
                scores[path] = [(v.psnr, v.ssim) for v in verdicts]
        ours, theirs = scores.values()
        if not np.allclose(np.array(ours, float), np.array(theirs, float), rtol=0, atol=1e-9):
            raise RuntimeError(f"the metrics disagree: {ours} against {theirs}")
    return {
        "config": name, "size": size, "profiles": profiles, "rounds": rounds,
        "segment_bytes": len(seg.data),
        "paths": {
            p: {"wall_ms": round(1000 * statistics.median(w for w, _ in s), 1),
                "cpu_ms": round(1000 * statistics.median(c for _, c in s), 1)}
            for p, s in samples.items()
        },
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--configs", default="360p,720p")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="castnet-verify-bench-") as tmp:
        rows = [bench(c, args.rounds, Path(tmp)) for c in args.configs.split(",")]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'ladder':28s} {'path':24s} {'wall ms':>8s} {'cpu ms':>8s}")
    for row in rows:
        label = f"{row['size']} -> {row['profiles']}"
        for path, t in row["paths"].items():
            print(f"{label:28s} {path:24s} {t['wall_ms']:8.1f} {t['cpu_ms']:8.1f}")
            label = ""
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
