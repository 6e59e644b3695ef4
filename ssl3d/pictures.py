"""PNG pictures: axial montages of a volume with a label overlay (demo, reports, inspection), and the captions
under them (one font for every picture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import Volume

__all__ = ["axial_montage", "save_montage", "text_font", "text_strip", "DEFAULT_COLORS"]

DEFAULT_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def _window(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((array.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def axial_montage(
    image: Volume,
    labels: Volume | None = None,
    slices: int = 6,
    window: tuple[float, float] = (-175.0, 250.0),
    colors: dict[int, tuple[int, int, int]] | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """An RGB (rows, cols, 3) uint8 montage of ``slices`` evenly spaced axial slices (k), radiological view.

    Labels (same grid) are blended with ``alpha`` in their colours (0-255 RGB; a palette by default).
    """
    arr = image.array
    ks = np.linspace(0, arr.shape[0] - 1, slices + 2)[1:-1].round().astype(int)
    tiles = []
    for k in ks:
        grey = _window(arr[k], *window)
        rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
        if labels is not None:
            lab = labels.array[k]
            for value in np.unique(lab[lab > 0]):
                color = (colors or {}).get(int(value), DEFAULT_COLORS[(int(value) - 1) % len(DEFAULT_COLORS)])
                mask = lab == value
                rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(color, dtype=np.float32)
        tiles.append(rgb.astype(np.uint8))
    return np.concatenate(tiles, axis=1)


def save_montage(rows: list[np.ndarray], path: str | Path, scale: int = 2) -> Path:
    """Stack montage rows vertically (padded to one width) and save as PNG."""
    from PIL import Image

    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    picture = Image.fromarray(np.concatenate(padded, axis=0))
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = Path(path)
    picture.save(path)
    return path


def text_font(size: int):
    """Pillow's default font at ``size`` pixels (one bitmap size on Pillow < 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def text_strip(width: int, text: str, height: int = 22) -> np.ndarray:
    """A black RGB strip (height, width, 3) with ``text`` in white, left-aligned."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (int(width), height))
    ImageDraw.Draw(strip).text((4, height // 2), text, fill=(255, 255, 255), font=text_font(13), anchor="lm")
    return np.asarray(strip)
