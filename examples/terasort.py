"""A distributed sort, TeraSort-style: sample the input, cut the key space into R
ranges of about equal size, route each record to its range's reducer, and let
every reducer sort its range. The output parts, concatenated in order, are the
whole input sorted.

Input: lines (e.g. 100-byte records, the first 10 bytes being the key), read as
bytes. Output: the same lines, sorted.

    synod mr run examples/terasort.py records.txt -o sorted --reducers 4
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Iterator
from typing import Any

from synod.mapreduce import Job, Keys, RecordBlock, TextLines

KEY_BYTES = 10


class TeraSort(Job):
    INPUT = TextLines(encoding=None)
    SAMPLE_RECORDS = 10_000

    def mapper_block(self, block: RecordBlock) -> Keys:
        # The whole line is the sort key (ties on the 10-byte key are broken by
        # the rest of the record), its value None. A block of lines per call,
        # returned as Keys (no (line, None) tuple per record), keeps Python's
        # per-record cost out of the path.
        return Keys(block.values)

    def sample_partitions(self, records: list[tuple[Any, Any]], reducers: int) -> list[bytes]:
        keys = sorted(line[:KEY_BYTES] for _, line in records)
        if not keys:
            return []
        return [keys[len(keys) * i // reducers] for i in range(1, reducers)]

    def partitioner(self, key: bytes, reducers: int) -> int:
        return bisect.bisect_right(self.partition_plan or (), key[:KEY_BYTES])

    def partitioner_block(self, keys: list[bytes], reducers: int) -> Iterator[int]:
        # The same as ``partitioner`` for a batch of keys, with no Python call
        # per key: the key prefixes and their bisections are C-level maps.
        prefixes = map(operator.getitem, keys, itertools.repeat(slice(0, KEY_BYTES)))
        return map(bisect.bisect_right, itertools.repeat(self.partition_plan or ()), prefixes)

    # No reducer: the identity. Each reducer's sorted range is its output.
