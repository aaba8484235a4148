"""The TFRecord schema of a block: feature keys, encoding and decoding.

This is the only place a feature name is written. Encoding is plain Python
(the protocol-buffer wire format of tf.train.Example, written by hand) so that
the conversion workers never import TensorFlow; decoding uses TensorFlow ops
so that it runs inside tf.data.

A record holds one block with its margin: int16 HU, little-endian, C order
(z, y, x), edge ``stored_size = block_size + 2 * margin``. Since schema 2 a
dataset may also store a paired condition beside each block (the same grid and
encoding: a simulated low dose, or a real low-dose series of the same patient);
its manifest then says what the condition is. Schema 1 datasets (no condition)
read as before.
"""

from __future__ import annotations

import struct

import numpy as np

SCHEMA_VERSION = 2  # 2: an optional paired condition per block (CONDITION_HU)
READABLE_SCHEMA_VERSIONS = (1, 2)  # manifests (and their shards) this code reads

HU = "block/hu_int16"
CONDITION_HU = "block/condition_hu_int16"
SIZE = "block/stored_size"
MARGIN = "block/margin"
ORIGIN = "block/origin_zyx"
PADDING = "block/padding_voxels"
VOLUME_ID = "volume/id"
SPACING = "volume/spacing_mm"


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list { value }


def _int64_feature(values) -> bytes:
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(3, _field(1, packed))  # Feature.int64_list { packed value }


def _float_feature(values) -> bytes:
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(2, _field(1, packed))  # Feature.float_list { packed value }


def _entry(key: str, feature: bytes) -> bytes:
    """One entry of the Features map: {1: key, 2: feature}."""
    return _field(1, _field(1, key.encode()) + _field(2, feature))


class BlockEncoder:
    """Serializes the blocks of one volume as tf.train.Example records.

    The features shared by every block of the volume are encoded once; each
    record then costs one copy of the block's voxels.
    """

    def __init__(self, stored_size: int, margin: int, volume_id: str, spacing_mm):
        self.stored_size = stored_size
        self._shared = (
            _entry(SIZE, _int64_feature([stored_size]))
            + _entry(MARGIN, _int64_feature([margin]))
            + _entry(VOLUME_ID, _bytes_feature(volume_id.encode()))
            + _entry(SPACING, _float_feature([float(s) for s in spacing_mm]))
        )

    def _voxels(self, block_hu: np.ndarray, what: str) -> bytes:
        if block_hu.dtype != np.int16 or block_hu.shape != (self.stored_size,) * 3:
            raise ValueError(
                f"{what} must be a cubic int16 array of edge {self.stored_size}, got {block_hu.shape} {block_hu.dtype}"
            )
        return block_hu.astype("<i2", copy=False).tobytes()  # one C-order copy

    def encode(self, block_hu: np.ndarray, origin_zyx, padding_voxels: int, condition_hu=None) -> bytes:
        """One record; ``condition_hu`` (same shape and dtype) is the block's paired condition, if any."""
        entries = _entry(HU, _bytes_feature(self._voxels(block_hu, "block")))
        if condition_hu is not None:
            entries += _entry(CONDITION_HU, _bytes_feature(self._voxels(condition_hu, "condition block")))
        entries = (
            entries
            + self._shared
            + _entry(ORIGIN, _int64_feature(origin_zyx))
            + _entry(PADDING, _int64_feature([padding_voxels]))
        )
        return _field(1, entries)  # Example.features


def encode_block(
    block_hu: np.ndarray, origin_zyx, margin: int, padding_voxels: int, volume_id: str, spacing_mm
) -> bytes:
    """A serialized tf.train.Example for one block with its margin."""
    if block_hu.ndim != 3:
        raise ValueError(f"block must be a cubic int16 array, got {block_hu.shape} {block_hu.dtype}")
    return BlockEncoder(block_hu.shape[0], margin, volume_id, spacing_mm).encode(block_hu, origin_zyx, padding_voxels)


def feature_spec(with_condition: bool = False) -> dict:
    import tensorflow as tf  # imported here: the encoding side must not load TensorFlow

    condition = {CONDITION_HU: tf.io.FixedLenFeature([], tf.string)} if with_condition else {}
    return {
        **condition,
        HU: tf.io.FixedLenFeature([], tf.string),
        SIZE: tf.io.FixedLenFeature([], tf.int64),
        MARGIN: tf.io.FixedLenFeature([], tf.int64),
        ORIGIN: tf.io.FixedLenFeature([3], tf.int64),
        PADDING: tf.io.FixedLenFeature([], tf.int64),
        VOLUME_ID: tf.io.FixedLenFeature([], tf.string),
        SPACING: tf.io.FixedLenFeature([3], tf.float32),
    }


def decode_block(serialized, stored_size: int, with_condition: bool = False) -> dict:
    """Parses one record into tensors (works eagerly and inside tf.data).

    Returns a dict: ``hu`` int16 [S, S, S] (S = stored_size), ``margin`` and
    ``padding_voxels`` int64 scalars, ``origin_zyx`` int64 [3], ``volume_id``
    string, ``spacing_mm`` float32 [3]; with ``with_condition``, also
    ``condition_hu`` int16 [S, S, S] (the record must hold one).
    """
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec(with_condition))
    hu = tf.io.decode_raw(parsed[HU], tf.int16, little_endian=True)
    condition = {}
    if with_condition:
        voxels = tf.io.decode_raw(parsed[CONDITION_HU], tf.int16, little_endian=True)
        condition = {"condition_hu": tf.reshape(voxels, [stored_size] * 3)}
    return {
        **condition,
        "hu": tf.reshape(hu, [stored_size] * 3),
        "margin": parsed[MARGIN],
        "origin_zyx": parsed[ORIGIN],
        "padding_voxels": parsed[PADDING],
        "volume_id": parsed[VOLUME_ID],
        "spacing_mm": parsed[SPACING],
    }
