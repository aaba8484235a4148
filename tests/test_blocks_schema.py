"""Tiling with margins, the TFRecord schema, and the TFRecord framing, against TensorFlow."""

from __future__ import annotations

import google_crc32c
import numpy as np
import pytest
import tensorflow as tf

from cgan_ct.data import schema
from cgan_ct.data.tfrecord_io import ShardWriter, file_crc32c, iter_records
from cgan_ct.ops import blocks


def test_blocks_cover_an_awkward_volume_exactly():
    hu = np.random.default_rng(0).integers(-1024, 2000, (37, 33, 40)).astype(np.int16)
    size, margin = 16, 4
    rebuilt = np.full((48, 48, 48), 9999, np.int16)
    origins = []
    for origin, block in blocks.iter_blocks_with_margin(hu, size, margin, pad_value=-1024):
        assert block.shape == (24, 24, 24)
        z, y, x = origin
        rebuilt[z : z + size, y : y + size, x : x + size] = block[margin:-margin, margin:-margin, margin:-margin]
        # the margin holds the true neighbours where they exist, air elsewhere
        expected = np.full((24, 24, 24), -1024, np.int16)
        lo = [max(0, o - margin) for o in origin]
        hi = [min(n, o + size + margin) for n, o in zip(hu.shape, origin, strict=True)]
        expected[tuple(slice(a - (o - margin), b - (o - margin)) for a, b, o in zip(lo, hi, origin, strict=True))] = hu[
            tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        ]
        np.testing.assert_array_equal(block, expected)
        origins.append(origin)
    assert len(origins) == 3 * 3 * 3 == len(set(origins))
    np.testing.assert_array_equal(rebuilt[:37, :33, :40], hu)
    assert (rebuilt[37:] == -1024).all() and (rebuilt[:, 33:] == -1024).all()


def test_padding_voxels():
    assert blocks.padding_voxels((37, 33, 40), (0, 0, 0), 16) == 0
    assert blocks.padding_voxels((37, 33, 40), (32, 32, 32), 16) == 16**3 - 5 * 1 * 8
    assert blocks.padding_voxels((10, 16, 16), (0, 0, 0), 16) == 16**3 - 10 * 16 * 16


def _record(seed=0, size=12):
    block = np.random.default_rng(seed).integers(-32768, 32767, (size,) * 3).astype(np.int16)
    return block, schema.encode_block(block, (32, 0, 96), 2, 17, "vol-abc", (5.0, 0.75, 0.5))


def test_record_parses_with_tensorflow_protobuf_and_ops():
    block, record = _record()
    example = tf.train.Example.FromString(record)
    assert example.features.feature[schema.ORIGIN].int64_list.value == [32, 0, 96]
    assert example.features.feature[schema.SIZE].int64_list.value == [12]
    decoded = schema.decode_block(tf.constant(record), 12)
    np.testing.assert_array_equal(decoded["hu"].numpy(), block)
    np.testing.assert_array_equal(decoded["origin_zyx"].numpy(), [32, 0, 96])
    assert decoded["volume_id"].numpy() == b"vol-abc"
    assert int(decoded["padding_voxels"]) == 17 and int(decoded["margin"]) == 2
    np.testing.assert_allclose(decoded["spacing_mm"].numpy(), [5.0, 0.75, 0.5])


def test_negative_and_large_ints_round_trip():
    block = np.zeros((4, 4, 4), np.int16)
    record = schema.encode_block(block, (-8, 2**40, 0), 0, 0, "v", (1, 1, 1))
    decoded = schema.decode_block(tf.constant(record), 4)
    np.testing.assert_array_equal(decoded["origin_zyx"].numpy(), [-8, 2**40, 0])


def test_decode_inside_tf_data(tmp_path):
    path = tmp_path / "a.tfrecord"
    with ShardWriter(path) as writer:
        for seed in range(5):
            writer.write(_record(seed)[1])
        writer.commit()
    data = tf.data.TFRecordDataset(str(path)).map(lambda r: schema.decode_block(r, 12)).batch(2)
    hu = np.concatenate([b["hu"].numpy() for b in data])
    np.testing.assert_array_equal(hu, np.stack([_record(s)[0] for s in range(5)]))


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 5), np.int16), np.zeros((4, 4, 4), np.float32)])
def test_encode_rejects_bad_blocks(bad):
    with pytest.raises(ValueError, match="cubic int16 array"):
        schema.encode_block(bad, (0, 0, 0), 0, 0, "v", (1, 1, 1))


def test_shard_writer_is_atomic_and_hashes(tmp_path):
    path = tmp_path / "s.tfrecord"
    with ShardWriter(path) as writer:
        writer.write(b"hello")
        assert not path.exists() and writer.tmp_path.exists()
        writer.commit()
    assert [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(path))] == [b"hello"]
    assert writer.crc32c == f"{google_crc32c.value(path.read_bytes()):08x}" == file_crc32c(path)
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "t.tfrecord") as writer:
        writer.write(b"x")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tfrecord"]


def test_reader_detects_corruption_and_truncation(tmp_path):
    path = tmp_path / "s.tfrecord"
    with ShardWriter(path) as writer:
        writer.write(b"a" * 100)
        writer.write(b"b" * 100)
        writer.commit()
    data = bytearray(path.read_bytes())
    data[50] ^= 0xFF
    (tmp_path / "bad.tfrecord").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="record 0 is corrupt"):
        list(iter_records(tmp_path / "bad.tfrecord"))
    (tmp_path / "short.tfrecord").write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="record 1 is corrupt or truncated"):
        list(iter_records(tmp_path / "short.tfrecord"))
