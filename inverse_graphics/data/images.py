"""Images from files: PNG or JPEG, one by one or whole folders, as float tensors; depth PNGs.

Colour images must be 8 bits per channel (RGB, RGBA, greyscale or palette; alpha is dropped):
a 16-bit image read as 8-bit would be clipped to white, so it is refused, with its mode named.
Depth images must be single-channel 16-bit PNGs (an 8-bit depth image cannot hold millimetres).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La")
DEPTH_DTYPES = (np.uint16, np.int32)  # PIL reads 16-bit PNGs as 'I;16' (uint16) or 'I' (int32)


def read_rgb(path: str | Path) -> np.ndarray:
    """An 8-bit colour or greyscale image file -> (H, W, 3) uint8; ValueError naming the file and
    what is wrong (unreadable, 16-bit or float, empty)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in EIGHT_BIT_MODES:
                depth = {"I": "32-bit integer", "F": "32-bit float"}.get(im.mode, "16-bit" if "16" in im.mode
                                                                           else "not 8-bit")
                raise ValueError(f"{path} is a {depth} image (PIL mode {im.mode}); expected 8-bit RGB or greyscale "
                                 "(scale it to 0-255 and save it as 8-bit)")
            array = np.array(im.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError(f"cannot read image {path}: unreadable (not an image file PIL can decode)") from None
    except OSError as exc:  # a truncated file, or one that cannot be opened
        raise ValueError(f"cannot read image {path}: unreadable ({exc.strerror or exc})") from exc
    if array.size == 0:
        raise ValueError(f"{path} has no pixels")
    return array


def read_depth(path: str | Path) -> np.ndarray:
    """A depth PNG -> (H, W) int64 raw values; ValueError naming the file unless it is one
    channel of 16 bits."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            array = np.array(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read depth {path.name}: {exc}") from exc
    if array.ndim != 2 or array.dtype.type not in DEPTH_DTYPES:
        raise ValueError(f"depth {path.name} is a {mode} image ({array.dtype}, shape {array.shape}); expected a "
                         "single-channel 16-bit PNG of millimetres x depth_scale")
    if array.min() < 0:
        raise ValueError(f"depth {path.name} has negative values")
    return array.astype(np.int64)


def load_images(paths: list[str | Path]) -> tuple[torch.Tensor, list[Path]]:
    """PNG/JPEG files, or folders of them -> (B, H, W, 3) float in [0, 1] and their paths.

    Unreadable files and images of different sizes raise ValueError naming the file.
    """
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no image or folder at {p}")
    if not files:
        raise ValueError(f"no PNG or JPEG images in {', '.join(map(str, paths))}")
    images = []
    for f in files:
        images.append(read_rgb(f).astype(np.float32) / 255)
        if images[-1].shape != images[0].shape:
            raise ValueError(f"{f} is {images[-1].shape[1]}x{images[-1].shape[0]} pixels, "
                             f"{files[0]} is {images[0].shape[1]}x{images[0].shape[0]}")
    return torch.from_numpy(np.stack(images)), files
