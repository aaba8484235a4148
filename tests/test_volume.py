"""Volume geometry: canonical orientation keeps every voxel at its LPS position; pseudonyms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cgan_ct import InputError, Volume
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.volume import AcquisitionInfo, canonical_axes, to_canonical


def _volume(direction, shape=(3, 4, 5)):
    hu = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    return Volume(
        hu,
        (2.0, 1.0, 0.5),
        (10.0, -20.0, 30.0),
        np.asarray(direction, float),
        "v",
        "p",
        AcquisitionInfo("test"),
    )


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q


@pytest.mark.parametrize(
    "perm,signs",
    list(itertools.product(itertools.permutations(range(3)), [(1, 1, 1), (-1, 1, -1), (1, -1, 1)])),
)
def test_canonical_keeps_positions(perm, signs):
    base = np.eye(3)[:, [2, 1, 0]]  # canonical: z->S, y->P, x->L
    direction = base[:, list(perm)] * np.asarray(signs)
    volume = _volume(direction)
    canonical = to_canonical(volume)
    np.testing.assert_allclose(canonical.direction, base, atol=1e-12)
    for value in (0, 17, 59):
        before = np.argwhere(volume.hu == value)[0]
        after = np.argwhere(canonical.hu == value)[0]
        np.testing.assert_allclose(canonical.index_to_lps(after), volume.index_to_lps(before))


@pytest.mark.parametrize("seed", range(5))
def test_oblique_directions_give_a_permutation(seed):
    perm, flip = canonical_axes(_rotation(seed))
    assert sorted(perm) == [0, 1, 2]
    canonical = to_canonical(_volume(_rotation(seed)))
    assert (np.diag(canonical.direction[::-1]) > 0).all()


def test_volume_validates_its_fields():
    with pytest.raises(InputError, match="3-D int16"):
        Volume(np.zeros((2, 2), np.int16), (1, 1, 1), (0, 0, 0), np.eye(3), "v", "p", AcquisitionInfo("t"))
    with pytest.raises(InputError, match="positive"):
        Volume(np.zeros((2, 2, 2), np.int16), (1, 0, 1), (0, 0, 0), np.eye(3), "v", "p", AcquisitionInfo("t"))


def test_pseudonyms_are_stable_keyed_and_namespaced(monkeypatch):
    monkeypatch.delenv("CGAN_CT_SALT", raising=False)
    a = pseudonym("pat", "MRN123", "salt-1")
    assert a == pseudonym("pat", "MRN123", "salt-1") and a.startswith("pat-") and len(a) == 20
    assert a != pseudonym("pat", "MRN123", "salt-2")
    assert pseudonym("vol", "MRN123", "salt-1")[4:] != a[4:]
    monkeypatch.setenv("CGAN_CT_SALT", "salt-2")
    assert pseudonym("pat", "MRN123") == pseudonym("pat", "MRN123", "salt-2")
    # golden value: HMAC-SHA256(key="k", message="pat\\0x"), first 16 hex digits
    assert pseudonym("pat", "x", "k") == "pat-894e563a72cd2442"
