"""The HU <-> [-1, 1] mapping: golden values, monotone, invertible, numpy == TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cgan_ct import read_volume
from cgan_ct.ops import intensity


def test_linear_window_golden_values():
    m = intensity.linear_mapping()
    np.testing.assert_allclose(m.forward(np.array([-2000, -1024, 1023.5, 3071, 5000])), [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(m.inverse(np.array([-1.0, 0.0, 1.0])), [-1024, 1023.5, 3071])


def test_uniform_histogram_equalizes_to_the_linear_window():
    m = intensity.fit_equalization(np.ones(4096, np.int64))
    hu = np.array([-1024.0, 0.0, 1023.5, 3071.0])
    np.testing.assert_allclose(m.forward(hu), intensity.linear_mapping().forward(hu), atol=1e-6)


def test_equalization_golden_two_level_histogram():
    counts = np.zeros(4096, np.int64)
    counts[0] = 3  # -1024 HU
    counts[1024] = 1  # 0 HU
    m = intensity.fit_equalization(counts, linear_weight=0.5)
    # mid-point CDF: 0.375 at -1024 HU, 0.875 at 0 HU, 1 at 3071 HU;
    # level = 0.5 * cdf + 0.5 * (h + 1024) / 4095 = 0.1875, 0.5625..., 1.0, then rescaled to [-1, 1].
    assert m.forward(np.array([0.0]))[0] == pytest.approx(-0.0768479, abs=1e-6)
    assert m.forward(np.array([-1024.0]))[0] == -1 and m.forward(np.array([3071.0]))[0] == 1


def test_rejects_bad_fits():
    with pytest.raises(ValueError):
        intensity.fit_equalization(np.zeros(4096))
    with pytest.raises(ValueError):
        intensity.fit_equalization(np.ones(10))
    with pytest.raises(ValueError, match="strictly increasing"):
        intensity.IntensityMapping("x", (0.0, 0.0), (-1.0, 1.0))


def test_json_round_trip():
    m = intensity.fit_equalization(np.arange(4096) % 7 + 1)
    assert intensity.IntensityMapping.from_json(m.to_json()) == m


def test_round_trip_within_one_hu_on_real_chest(shared_ct):
    hu = read_volume(shared_ct / "lung-pet-ct-dx-A0001").hu
    m = intensity.fit_equalization(intensity.hu_histogram(hu))
    forward = m.forward(hu)
    assert forward.dtype == np.float32 and forward.min() >= -1 and forward.max() <= 1
    assert np.abs(m.inverse(forward) - hu).max() <= 1.0
    sample = hu[::8, ::4, ::4]
    forward_tf = m.forward_tf(tf.constant(sample)).numpy()
    np.testing.assert_allclose(forward_tf, m.forward(sample), atol=2e-6)
    assert np.abs(m.inverse_tf(forward_tf).numpy() - sample).max() <= 1.0
    # equalization spreads the crowded tissue range wider than the linear window does
    tissue = hu[hu > -1000]
    spread = lambda values: np.subtract(*np.percentile(values, [75, 25]))  # noqa: E731
    assert spread(m.forward(tissue)) > 1.4 * spread(intensity.linear_mapping().forward(tissue))  # measured 1.56


def test_tensorflow_ops_run_inside_tf_data():
    m = intensity.fit_equalization(np.arange(4096) + 1)
    data = tf.data.Dataset.from_tensor_slices(np.array([[-1024, 0], [500, 3071]], np.int16)).map(m.forward_tf)
    got = np.stack([d.numpy() for d in data])
    np.testing.assert_allclose(got, m.forward(np.array([[-1024, 0], [500, 3071]])), atol=2e-6)
