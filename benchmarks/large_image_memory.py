"""Peak memory of decoding one very large photo, whole and reduced for a 224 px network.

Writes a 12,000 × 12,000 JPEG and PNG (a smooth upscaled picture) to a temporary folder, then
decodes each in a fresh process, whole (`decode_image(path)`) and as training does for a 224 px
input (`max_side` = 448), and prints each process's peak resident memory beside a process that
decodes a 10 px image (what importing hierclf and torch costs).

    python benchmarks/large_image_memory.py
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

MEASURE = """
import resource, sys, warnings
warnings.simplefilter("ignore")
from hierclf.data.images import decode_image
pixels = decode_image(sys.argv[1], 3, int(sys.argv[2]) or None)
print(pixels.shape[0], pixels.shape[1], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def peak(path: Path, side: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(side)], capture_output=True, text=True,
                         check=True).stdout.split()
    return f"{out[0]}×{out[1]}", int(out[2])


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rng = np.random.default_rng(0)
        picture = Image.fromarray(rng.integers(0, 255, (375, 375, 3), dtype=np.uint8)).resize((12000, 12000))
        picture.save(folder / "large.jpg", quality=90)
        picture.save(folder / "large.png", compress_level=1)
        Image.new("RGB", (10, 10)).save(folder / "tiny.png")
        _, base = peak(folder / "tiny.png", 0)
        print(f"a 10 px image: peak {base} MiB (the interpreter, torch and hierclf)")
        for name in ("large.jpg", "large.png"):
            for side, what in ((0, "whole"), (448, "reduced for 224 px")):
                shape, used = peak(folder / name, side)
                print(f"{name:<10} {what:<19} -> {shape:>11} pixels, peak {used} MiB (+{used - base} MiB)")


if __name__ == "__main__":
    main()
