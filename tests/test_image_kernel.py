"""The exposure kernel (``calibrate_image_block``): the formula of docs/calibration.md,
'Images', bit for bit, in place."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskcal.apply import calibrate_image_block


def formula(image, variance, c, cbar, sigma_c, sky, include_calib_var, fix_zero_variance):
    """docs/calibration.md, 'Images', written out in float64, rounded to float32 at the end."""
    p = image.astype(np.float64)
    scale = np.asarray(c, dtype=np.float64) / cbar
    var = variance * scale**2
    if include_calib_var:
        var = var + (p * sigma_c / cbar) ** 2
    if not fix_zero_variance:
        var = np.where(p == 0, np.nan, var)
    return (p * scale - sky).astype(np.float32), var.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    ny=st.integers(1, 40),
    nx=st.integers(1, 1500),
    c_is_array=st.booleans(),
    sky_is_array=st.booleans(),
    include_calib_var=st.booleans(),
    fix_zero_variance=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_kernel_is_the_formula_in_place_or_not(
    ny, nx, c_is_array, sky_is_array, include_calib_var, fix_zero_variance, seed
):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 300, (ny, nx)).astype(np.float32)
    image[rng.random((ny, nx)) < 0.1] = 0.0  # exact zeros: hscPipe's NaN variance
    variance = rng.uniform(1, 500, (ny, nx)).astype(np.float32)
    c = rng.uniform(20, 80, (ny, nx)) if c_is_array else float(rng.uniform(20, 80))
    sky = rng.normal(0, 5, (ny, nx)).astype(np.float32) if sky_is_array else 0.0
    options = {
        "sigma_c": float(rng.uniform(0, 1)),
        "sky": sky,
        "include_calib_var": include_calib_var,
        "fix_zero_variance": fix_zero_variance,
    }
    expected = formula(image, variance, c, 47.0, **options)
    got = calibrate_image_block(image, variance, c, 47.0, **options)
    in_place = image.copy(), variance.copy()
    calibrate_image_block(*in_place, c, 47.0, out=in_place, **options)
    for want, a, b in zip(expected, got, in_place, strict=True):
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, want, equal_nan=True)
        assert np.array_equal(b, want, equal_nan=True)
    zeros = image == 0
    if zeros.any():
        assert np.isnan(got[1][zeros]).all() == (not fix_zero_variance)


def test_kernel_accepts_one_dimensional_and_broadcast_inputs():
    image = np.array([0.0, 1.5, -2.0], np.float32)
    variance = np.array([1.0, 2.0, 3.0], np.float32)
    got = calibrate_image_block(image, variance, np.array([2.0]), 4.0, sky=0.25)
    want = formula(image, variance, np.array([2.0]), 4.0, 0.0, 0.25, False, False)
    assert got[0].shape == (3,)
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("shape", [(0, 0), (3, 0), (0, 5), (0,), (), (2, 3, 4)])
def test_kernel_takes_empty_and_other_shapes(shape):
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(np.float32)
    variance = np.ones(shape, np.float32)
    got = calibrate_image_block(image, variance, 2.0, 4.0, sky=0.5)
    want = formula(image, variance, 2.0, 4.0, 0.0, 0.5, False, False)
    for a, b in zip(got, want, strict=True):
        assert a.shape == shape and np.array_equal(a, b, equal_nan=True)
