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
        rest = data[n4 << 2:]
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
