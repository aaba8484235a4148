"""The TFRecord schema of a block: feature keys, encoding and decoding.

This is the only place a feature name is written. Encoding is plain Python
(the protocol-buffer wire format of tf.train.Example, written by hand) so that
the conversion workers never import TensorFlow; decoding uses TensorFlow ops
so that it runs inside tf.data.

A record holds one block with its margin: int16 HU, little-endian, C order
(z, y, x), edge ``stored_size = block_size + 2 * margin``.
"""

from __future__ import annotations

import struct

import numpy as np

SCHEMA_VERSION = 1

HU = "block/hu_int16"
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


def encode_block(
    block_hu: np.ndarray,
    origin_zyx,
    margin: int,
    padding_voxels: int,
    volume_id: str,
    spacing_mm,
) -> bytes:
    """A serialized tf.train.Example for one block with its margin."""
    if block_hu.dtype != np.int16 or block_hu.ndim != 3 or len(set(block_hu.shape)) != 1:
        raise ValueError(f"block must be a cubic int16 array, got {block_hu.shape} {block_hu.dtype}")
    features = {
        HU: _bytes_feature(np.ascontiguousarray(block_hu, dtype="<i2").tobytes()),
        SIZE: _int64_feature([block_hu.shape[0]]),
        MARGIN: _int64_feature([margin]),
        ORIGIN: _int64_feature(origin_zyx),
        PADDING: _int64_feature([padding_voxels]),
        VOLUME_ID: _bytes_feature(volume_id.encode()),
        SPACING: _float_feature([float(s) for s in spacing_mm]),
    }
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, value)) for key, value in features.items())
    return _field(1, entries)  # Example.features { feature map entries }


def feature_spec() -> dict:
    import tensorflow as tf  # imported here: the encoding side must not load TensorFlow

    return {
        HU: tf.io.FixedLenFeature([], tf.string),
        SIZE: tf.io.FixedLenFeature([], tf.int64),
        MARGIN: tf.io.FixedLenFeature([], tf.int64),
        ORIGIN: tf.io.FixedLenFeature([3], tf.int64),
        PADDING: tf.io.FixedLenFeature([], tf.int64),
        VOLUME_ID: tf.io.FixedLenFeature([], tf.string),
        SPACING: tf.io.FixedLenFeature([3], tf.float32),
    }


def decode_block(serialized, stored_size: int) -> dict:
    """Parses one record into tensors (works eagerly and inside tf.data).

    Returns a dict: ``hu`` int16 [S, S, S] (S = stored_size), ``margin`` and
    ``padding_voxels`` int64 scalars, ``origin_zyx`` int64 [3], ``volume_id``
    string, ``spacing_mm`` float32 [3].
    """
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    hu = tf.io.decode_raw(parsed[HU], tf.int16, little_endian=True)
    return {
        "hu": tf.reshape(hu, [stored_size] * 3),
        "margin": parsed[MARGIN],
        "origin_zyx": parsed[ORIGIN],
        "padding_voxels": parsed[PADDING],
        "volume_id": parsed[VOLUME_ID],
        "spacing_mm": parsed[SPACING],
    }
