"""Image grids as PNG files (written atomically), and why a path cannot be written."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from jaxgen.files import atomic_path


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """``[N, H, W, C]`` in ``[0, 1]`` -> one ``uint8`` image, ``ncol`` per row (default: square)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images have shape {images.shape}; expected [N, H, W, C], C in (1, 3)")
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    # uint8 from the start (the padding is white): a quarter of a float32 grid's memory.
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = np.round(np.clip(im.astype(np.float32), 0, 1) * 255)
    return grid[..., 0] if c == 1 else grid


def save_grid(images: np.ndarray, path: str, ncol: int | None = None, scale: int = 2) -> str:
    """Write a PNG grid (each pixel ``scale`` x ``scale``); writes atomically; returns the path."""
    grid = make_grid(images, ncol)
    im = Image.fromarray(grid)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")  # PNG also for a target whose name lacks ".png"
    return path
