"""Writes specs/data/digits-png/, the image folder of specs/digits-folder.yaml: `python specs/data/make_digits_png.py`.

The first 20 images of each class of scikit-learn's bundled 8x8 digits as grayscale PNGs, one folder per
class (0/ ... 9/): pixel = value x 15 (the digits hold 0..16), so the PNGs keep the digits exactly.
"""
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

PER_CLASS = 20


def write(out: Path, per_class: int | None = None) -> int:
    """The digits as PNGs under out/<class>/; all of them unless `per_class`. Returns how many."""
    digits = load_digits()
    written = {c: 0 for c in range(10)}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if per_class is not None and written[label] >= per_class:
            continue
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 15).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
        written[label] += 1
    return sum(written.values())


if __name__ == "__main__":
    out = Path(__file__).with_name("digits-png")
    shutil.rmtree(out, ignore_errors=True)
    print(f"wrote {write(out, PER_CLASS)} images to {out}")
