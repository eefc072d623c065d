"""fer_pipeline.resize.shrink: the requested size, close to OpenCV's area filter on a real photo, exact block means
at integer factors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_pipeline.resize import shrink

PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "multi_face.jpg"


@pytest.fixture(scope="module")
def photo():
    if not PHOTO.is_file():
        pytest.skip(f"{PHOTO} not found")
    return np.asarray(Image.open(PHOTO).convert("RGB"))


@pytest.mark.parametrize("size", [(640, 384), (96, 96), (240, 160), (123, 77), (999, 666), (500, 333)])
def test_size_dtype_and_close_to_area(photo, size):
    out = shrink(photo, size)
    assert out.shape == (size[1], size[0], 3) and out.dtype == np.uint8
    ref = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    # the two filters differ by sub-pixel sampling positions only: a few gray levels on this sharp photo
    assert np.abs(out.astype(np.int16) - ref).mean() < 5.0


def test_gray_and_enlarging(photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    assert shrink(gray, (100, 60)).shape == (60, 100)
    big = shrink(photo[:50, :80], (160, 100))
    assert big.shape == (100, 160, 3)


def test_same_size_is_returned_unchanged(photo):
    assert shrink(photo, (photo.shape[1], photo.shape[0])) is photo


def test_integer_factor_is_exact_block_mean():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    out = shrink(img, (30, 20))  # factor 3 on both axes
    expect = img.reshape(20, 3, 30, 3, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out - expect).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (-1, 5)])
def test_bad_size(photo, size):
    with pytest.raises(ValueError, match="size"):
        shrink(photo, size)


@pytest.mark.parametrize("size", [(640, 384), (96, 96), (123, 77)])
def test_geometry_within_half_an_output_pixel(size):
    h, w = 1334, 2000
    yy, xx = np.mgrid[0:h, 0:w]
    for cx, cy in [(300, 250), (1000, 700), (1850, 1250)]:
        blob = (255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 40.0 ** 2))).astype(np.uint8)
        out = shrink(blob, size).astype(np.float64)
        gy, gx = np.mgrid[0:size[1], 0:size[0]]
        mx, my = (out * gx).sum() / out.sum(), (out * gy).sum() / out.sum()
        # pixel centres: output x maps to source (x + 0.5) * w / width - 0.5
        assert abs((mx + 0.5) * w / size[0] - 0.5 - cx) < 0.5 * w / size[0]
        assert abs((my + 0.5) * h / size[1] - 0.5 - cy) < 0.5 * h / size[1]
