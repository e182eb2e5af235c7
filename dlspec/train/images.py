"""Images: decoding a file to a tensor, and the per-example transforms of the augmentation registry.

`decode(path, size, channels, resize)` is the one way an image file becomes a model input: the image_folder
data kind calls it for every example, and the run records its arguments (`rundir.RunDir.preprocessing()`),
so inference on a new image can call it with the same ones. The transforms take one example [C, H, W]
(floats, 0..1 before normalisation) and a torch.Generator, and draw from nothing else: where they run (a
loader worker or the training process) does not change what they do. They follow torchvision's
definitions (RandomRotation, ColorJitter, RandomResizedCrop, RandomErasing) on tensors.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dlspec.core.errors import DlspecError
from dlspec.core.reading import open_checked
from dlspec.train.tables import DataFault

MAX_FILE_BYTES = 1 << 28  # one image file
MAX_PIXELS = 1 << 26  # refused before decoding: a small file can claim a huge image (a decompression bomb)
EXTENSIONS = (".jpg", ".jpeg", ".png")
RESIZE = ("shorter_side", "stretch")


def decode(path: Path, size: Sequence[int], channels: int, resize: str) -> torch.Tensor:
    """The image at `path` as a [channels, H, W] float tensor in [0, 1], `size` = (H, W): `shorter_side`
    scales the image until it covers H x W, then crops the centre (torchvision's Resize + CenterCrop);
    `stretch` scales it to H x W exactly. 1 channel is grayscale (PIL's L), 3 are RGB."""
    from PIL import Image, UnidentifiedImageError
    height, width = size
    try:
        with open_checked(path, MAX_FILE_BYTES, what="image files") as handle:
            image = Image.open(handle)
            if image.width * image.height > MAX_PIXELS:
                raise DataFault(f"image {path} is {image.width}x{image.height} pixels; images are limited to "
                                f"{MAX_PIXELS:,} pixels")
            mode = "L" if channels == 1 else "RGB"
            image.draft(mode, (width, height))  # a JPEG much larger than needed decodes at a reduced scale
            image = _resized(image.convert(mode), height, width, resize)
            array = np.asarray(image, dtype=np.uint8)
    except DlspecError as exc:
        raise DataFault(exc.problems[0].message) from None
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise DataFault(f"cannot decode image {path}: {exc}") from None
    pixels = torch.from_numpy(array.copy())
    pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    return pixels.float().div_(255)


def _resized(image, height: int, width: int, resize: str):
    from PIL import Image
    if image.size == (width, height):
        return image
    if resize == "stretch":
        return image.resize((width, height), Image.BILINEAR)
    scale = max(height / image.height, width / image.width)
    w, h = max(round(image.width * scale), width), max(round(image.height * scale), height)
    image = image.resize((w, h), Image.BILINEAR)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


# ---- per-example transforms -------------------------------------------------------------------------------------

def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


def _randint(g: torch.Generator, high: int) -> int:
    """Uniform in [0, high)."""
    return int(torch.randint(high, (), generator=g))


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate counter-clockwise about the centre, bilinear, zeros outside (torchvision's rotate on tensors)."""
    _, h, w = x.shape
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # each output pixel (centred coordinates) samples the input at its inverse rotation
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) - (h - 1) / 2,
                            torch.arange(w, dtype=torch.float32) - (w - 1) / 2, indexing="ij")
    src_x, src_y = cos * xs - sin * ys, sin * xs + cos * ys
    grid = torch.stack([(src_x + (w - 1) / 2) * 2 / w - 1 + 1 / w, (src_y + (h - 1) / 2) * 2 / h - 1 + 1 / h], dim=-1)
    return F.grid_sample(x[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def random_rotation(x: torch.Tensor, g: torch.Generator, degrees: float) -> torch.Tensor:
    return rotate(x, _uniform(g, -degrees, degrees))


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[1, H, W] luma of an RGB image (ITU-R 601, as torchvision); a 1-channel image as it is."""
    if len(x) == 1:
        return x
    return (0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def adjust_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue of an RGB image by `shift` turns (in [-0.5, 0.5])."""
    if len(x) != 3:
        return x
    r, g, b = x
    high, low = x.max(0).values, x.min(0).values
    chroma = high - low
    value, saturation = high, chroma / torch.where(high == 0, torch.ones_like(high), high)
    safe = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    rc, gc, bc = (high - r) / safe, (high - g) / safe, (high - b) / safe
    hue = torch.where(high == r, bc - gc, torch.where(high == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(chroma == 0, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0 + 1.0 + shift, 1.0)
    i = torch.floor(hue * 6.0)
    f = hue * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    choices = torch.stack([torch.stack(c) for c in ((value, t, p), (q, value, p), (p, value, t), (p, q, value),
                                                    (t, p, value), (value, p, q))])  # (6, 3, H, W)
    return choices.gather(0, i[None, None].expand(1, 3, *i.shape))[0]


def color_jitter(x: torch.Tensor, g: torch.Generator, brightness: float, contrast: float, saturation: float,
                 hue: float) -> torch.Tensor:
    """torchvision's ColorJitter: each factor drawn from [1 - amount, 1 + amount] (hue: [-hue, hue]), applied
    in a random order."""
    factors = [_uniform(g, max(0.0, 1 - a), 1 + a) if a else None for a in (brightness, contrast, saturation)]
    shift = _uniform(g, -hue, hue) if hue else None
    for step in torch.randperm(4, generator=g).tolist():
        if step == 0 and factors[0] is not None:
            x = (x * factors[0]).clamp(0, 1)
        elif step == 1 and factors[1] is not None:
            x = (factors[1] * x + (1 - factors[1]) * grayscale(x).mean()).clamp(0, 1)
        elif step == 2 and factors[2] is not None and len(x) == 3:
            x = (factors[2] * x + (1 - factors[2]) * grayscale(x)).clamp(0, 1)
        elif step == 3 and shift is not None:
            x = adjust_hue(x, shift)
    return x


def resized_crop(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """Cut [top:top+height, left:left+width] and scale it back to the example's size (bilinear, antialiased)."""
    size = x.shape[-2:]
    crop = x[:, top:top + height, left:left + width]
    return F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def random_resized_crop(x: torch.Tensor, g: torch.Generator, scale: Sequence[float],
                        ratio: Sequence[float]) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params: ten tries at a box of random area and aspect ratio, else the
    centre crop of the nearest allowed aspect ratio; then the box scaled to the example's size."""
    _, h, w = x.shape
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(g, scale[0], scale[1])
        aspect = math.exp(_uniform(g, *log_ratio))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return resized_crop(x, _randint(g, h - ch + 1), _randint(g, w - cw + 1), ch, cw)
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        cw, ch = round(h * max(ratio)), h
    else:
        cw, ch = w, h
    return resized_crop(x, (h - ch) // 2, (w - cw) // 2, ch, cw)


def random_erasing(x: torch.Tensor, g: torch.Generator, p: float, scale: Sequence[float], ratio: Sequence[float],
                   value: float) -> torch.Tensor:
    """torchvision's RandomErasing: with probability p, a box of random area and aspect ratio set to `value`."""
    if torch.rand((), generator=g).item() >= p:
        return x
    _, h, w = x.shape
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        erase = h * w * _uniform(g, scale[0], scale[1])
        aspect = math.exp(_uniform(g, *log_ratio))
        eh, ew = round(math.sqrt(erase * aspect)), round(math.sqrt(erase / aspect))
        if eh < h and ew < w:
            top, left = _randint(g, h - eh + 1), _randint(g, w - ew + 1)
            x = x.clone()
            x[:, top:top + eh, left:left + ew] = value
            return x
    return x
