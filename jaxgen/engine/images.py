"""Image grids as PNG files."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """``[N, H, W, C]`` in ``[0, 1]`` -> one ``uint8`` image, ``ncol`` per row (default: square)."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images have shape {images.shape}; expected [N, H, W, C], C in (1, 3)")
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i, im in enumerate(images):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = im
    grid = np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)
    return grid[..., 0] if c == 1 else grid


def save_grid(images: np.ndarray, path: str, ncol: int | None = None, scale: int = 2) -> str:
    """Write a PNG grid (each pixel ``scale`` x ``scale``); writes atomically; returns the path."""
    grid = make_grid(images, ncol)
    im = Image.fromarray(grid)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    im.save(tmp)
    os.replace(tmp, path)
    return path
