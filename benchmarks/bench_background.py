"""The skyCorr model of one full HSC CCD: a 64-pixel-bin Akima entry (32 x 66 bins) plus a
Chebyshev entry, evaluated whole and in 512-row blocks (as calibrateExposure does).

    .venv/bin/python benchmarks/bench_background.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from daskcal.calib.background import BackgroundEntry, BackgroundList


def main(repeat: int = 5) -> None:
    rng = np.random.default_rng(0)
    bbox = (0, 0, 2048, 4176)
    background = BackgroundList(
        [BackgroundEntry(1000 + rng.normal(size=(33, 16)), bbox, approx_style=0,
                         approx_order_x=6, approx_order_y=6),
         BackgroundEntry(rng.normal(size=(66, 32)), bbox)]
    )  # fmt: skip
    whole, blocks = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        background.image()
        whole.append(time.perf_counter() - start)
        start = time.perf_counter()
        for y0 in range(0, 4176, 512):
            background.image_rows(y0, min(y0 + 512, 4176))
        blocks.append(time.perf_counter() - start)
    print(f"whole CCD: median {statistics.median(whole):.3f} s of {repeat}")
    print(f"512-row blocks: median {statistics.median(blocks):.3f} s of {repeat}")


if __name__ == "__main__":
    main()
