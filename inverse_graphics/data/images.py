"""Images from files: PNG or JPEG, one by one or whole folders, as float tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


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
        try:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.float32) / 255)
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read image {f}: {exc}") from exc
        if images[-1].shape != images[0].shape:
            raise ValueError(f"{f} is {images[-1].shape[1]}x{images[-1].shape[0]} pixels, "
                             f"{files[0]} is {images[0].shape[1]}x{images[0].shape[0]}")
    return torch.from_numpy(np.stack(images)), files
