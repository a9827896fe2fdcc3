"""Running map and reduce task attempts: the data path of a worker.

A map attempt reads its split in blocks, calls the mapper per record, and puts each
pair into one of R in-memory buckets (the job's partitioner, by default a stable
CRC-32 of the key). When the buffer's estimated size passes
``map_buffer_bytes_max``, every bucket is sorted by key, combined and written as a
*run* to a spill file; at the end the runs are merged (in passes of at most
``merge_fan_in_max``) into one output file holding the R sorted buckets back to
back. The master learns each bucket's offset and length.

A reduce attempt reads its bucket from every map task's committed attempt. If the
bucket fits ``reduce_memory_bytes_max`` it is loaded and sorted in memory (the runs
are already sorted, so Timsort merges them in linear time); otherwise the runs are
streamed through a k-way merge. Pairs are grouped by key and handed to the reducer,
whose output goes to a temporary file that is renamed to ``part-NNNNN`` only when
complete: a reader never sees a partial part file under its final name.

Everything that crosses a process boundary -- the messages and the files -- is
msgpack; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import operator
import os
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any
from zlib import crc32

import msgpack

from synod.codec.registry import decode, encode
from synod.core.faults import declare_mutant, mutant
from synod.core.ids import NodeId
from synod.mapreduce.config import MapReduceConfig
from synod.mapreduce.formats import (
    InputDecodeError,
    InputFormat,
    MsgpackOutput,
    MsgpackRecords,
    RecordBlock,
)
from synod.mapreduce.job import Job, Keys, Step, stable_hash
from synod.mapreduce.messages import (
    AssignMap,
    AssignReduce,
    CancelAttempt,
    CounterValue,
    MapOutputRef,
    Shutdown,
    SkipRecord,
    TaskCompleted,
    TaskFailed,
    TaskKind,
    WorkerReady,
)

COMMIT_WITHOUT_RENAME = declare_mutant(
    "mapreduce.commit_without_rename",
    "a reduce attempt writes straight into part-NNNNN instead of a temp file renamed on completion",
)

JobFactory = Callable[[], Job]

_SCALARS = frozenset({str, int, bytes, float, bool, type(None)})
_KEY0 = itemgetter(0)
_MISSING: Any = object()
_PAIR_TYPES: frozenset[type] = frozenset({tuple, list})
_VALUE1 = itemgetter(1)
#: Mapper output is buffered in batches of this many pairs.
_BATCH_RECORDS = 4096
#: Up to this many buckets, a batch is distributed with one C-level pass per bucket.
_COMPRESS_REDUCERS_MAX = 32
#: _BUCKET_MASKS[i] translates a byte string of bucket numbers into a mask of
#: the pairs of bucket i (1 where the byte is i, else 0).
_BUCKET_MASKS = [bytes(1 if j == i else 0 for j in range(256)) for i in range(_COMPRESS_REDUCERS_MAX)]


def _stable_buckets(keys: list[Any], kinds: set[type], reducers: int) -> list[int]:
    """``stable_hash(key) % reducers`` for each key, at C speed for str keys."""
    if kinds == {str}:
        try:
            hashes = list(map(crc32, map(str.encode, keys)))
        except UnicodeEncodeError:  # a lone surrogate: stable_hash's surrogatepass
            hashes = list(map(stable_hash, keys))
    else:
        hashes = list(map(stable_hash, keys))
    return list(map(operator.mod, hashes, itertools.repeat(reducers)))
_READ_BYTES = 1 << 20
#: Run files (spills and map output) are frames: this header -- the payload's
#: length (with the flag below) and CRC-32, little-endian -- then a msgpack array
#: of [key, value] pairs, or of keys alone. The checksum makes a corrupt bucket
#: a fetch failure, never bad output.
_FRAME = struct.Struct("<II")
#: Set in a frame's length field when its payload is a msgpack array of keys
#: whose values are all None.
_KEYS_ONLY = 1 << 31
_packer = msgpack.Packer(use_bin_type=True)
#: Estimated bytes of Python objects per buffered pair besides key and value:
#: the tuple (56) and its slot in the bucket list (8).
_PAIR_OVERHEAD_BYTES = 64
#: The same for a key buffered alone (its value None): its slot in the list.
_KEY_OVERHEAD_BYTES = 8
_NONE_KIND: frozenset[type] = frozenset({type(None)})
_ESTIMATE_EVERY = 4096


class UserCodeError(Exception):
    """The job's code (or its data) failed on a record: reported to the master."""

    def __init__(self, error: str, *, path: str = "", offset: int = -1, detail: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.path = path
        self.offset = offset
        self.detail = detail


class CorruptRun(ValueError):
    """A run file's frame fails its checksum or overruns the run."""


class FetchFailed(Exception):
    """A reduce attempt could not read a map task's bucket: the file is missing,
    truncated or corrupt, or (cluster) its worker cannot be reached. Reported to
    the master as ``TaskFailed.lost_map_attempts``, which re-executes the map task."""

    def __init__(self, refs: Iterable[MapOutputRef], error: str) -> None:
        self.refs = tuple(refs)
        names = ", ".join(f"map task {r.map_task} (attempt {r.attempt})" for r in self.refs)
        super().__init__(f"cannot read the output of {names}: {error}")
        self.error = str(self)
        self.reason = error


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


_CONTAINERS = frozenset({tuple, list, dict})
_check_packer = msgpack.Packer(use_bin_type=True)


def _check_column(items: list[Any], kinds: set[type], role: str) -> None:
    """``check_pair`` for a batch of keys or values, at C speed when they are
    scalars (the common case); item by item otherwise, for the message."""
    if kinds <= _SCALARS:
        if int not in kinds:
            return
        ints = items if len(kinds) == 1 else [item for item in items if type(item) is int]
        if min(ints) >= -(2**63) and max(ints) < 2**64:
            return
    for item in items:
        if role == "key":
            check_pair(item, None)
        else:
            check_pair(None, item)


def check_pair(key: Any, value: Any) -> None:
    """Raise TypeError unless ``key`` is a msgpack value and ``value`` is one at
    its top level (scalars, tuples, lists, dicts). Keys are checked in full, here,
    where the input record is known; a value's nested contents are checked when
    the map output is written (cost: one check per pair in the hot loop)."""
    kind = type(key)
    if kind not in _SCALARS or (kind is int and not -(2**63) <= key < 2**64):
        try:
            _check_packer.pack(key)
        except (TypeError, ValueError, OverflowError) as error:
            _check_packer.reset()
            raise TypeError(f"key {key!r} cannot be serialized with msgpack ({error})") from None
    kind = type(value)
    if kind in _SCALARS:
        if kind is int and not -(2**63) <= value < 2**64:
            raise TypeError(f"value {value!r} cannot be serialized with msgpack (int out of range)")
    elif kind not in _CONTAINERS:
        raise TypeError(f"value {value!r} cannot be serialized with msgpack (type {kind.__name__})")


# ------------------------------------------------------------------- run files


Frame = tuple[int, bool, tuple[Any, ...]]


def iter_frames(path: str, offset: int, length: int) -> Iterator[Frame]:
    """(bytes, keys only, items) for each frame of the run in ``length`` bytes at
    ``offset`` of ``path``: the items are keys (their values all None) or pairs.
    A short file is an ``OSError``; a frame whose checksum does not match, or
    that overruns the run, is a ``CorruptRun``."""
    if length <= 0:
        return
    with open(path, "rb", buffering=_READ_BYTES) as handle:
        handle.seek(offset)
        position = offset
        remaining = length
        while remaining > 0:
            header = handle.read(_FRAME.size)
            if len(header) < _FRAME.size:
                raise OSError(f"{path}: run truncated ({remaining} bytes missing at end)")
            size, checksum = _FRAME.unpack(header)
            keys_only = size & _KEYS_ONLY
            size &= ~_KEYS_ONLY
            if size > remaining - _FRAME.size:
                raise CorruptRun(f"{path}: frame at byte {position} overruns its run")
            payload = handle.read(size)
            if len(payload) < size:
                raise OSError(f"{path}: run truncated ({remaining} bytes missing at end)")
            if crc32(payload, keys_only) != checksum:
                raise CorruptRun(f"{path}: checksum mismatch in the frame at byte {position}")
            remaining -= _FRAME.size + size
            position += _FRAME.size + size
            yield (_FRAME.size + size, bool(keys_only),
                   msgpack.unpackb(payload, raw=False, use_list=False, strict_map_key=False))


def _frame_pairs(frame: Frame) -> tuple[tuple[Any, Any], ...]:
    _, keys_only, items = frame
    return tuple(zip(items, itertools.repeat(None))) if keys_only else items


def iter_chunks(path: str, offset: int, length: int) -> Iterator[tuple[tuple[Any, Any], ...]]:
    """The chunks of pairs of the run in ``length`` bytes at ``offset`` of ``path``."""
    return map(_frame_pairs, iter_frames(path, offset, length))


def iter_pairs(path: str, offset: int, length: int) -> Iterator[tuple[Any, Any]]:
    return itertools.chain.from_iterable(iter_chunks(path, offset, length))


def fetch_frames(ref: MapOutputRef) -> Iterator[Frame]:
    """The frames of one map task's bucket; any failure to read them (a missing,
    short, corrupt or undecodable file) is a ``FetchFailed`` naming that map attempt."""
    try:
        yield from iter_frames(ref.path, ref.offset, ref.length)
    except (OSError, ValueError, msgpack.UnpackException) as error:
        raise FetchFailed((ref,), _describe(error)) from None


def fetch_chunks(ref: MapOutputRef) -> Iterator[tuple[tuple[Any, Any], ...]]:
    return map(_frame_pairs, fetch_frames(ref))


class KeysOnly:
    """Sorted keys whose values are all None (a sort's records), kept without a
    (key, None) tuple each: a list of keys sorts and packs faster than pairs."""

    __slots__ = ("keys",)

    def __init__(self, keys: list[Any]) -> None:
        self.keys = keys

    def pairs(self) -> list[tuple[Any, Any]]:
        return list(zip(self.keys, itertools.repeat(None)))


def _values_all_none(pairs: list[tuple[Any, Any]]) -> bool:
    return all(map(operator.is_, map(_VALUE1, pairs), itertools.repeat(None)))


def _sorted_keys(keys: list[Any], where: str) -> KeysOnly:
    try:
        keys.sort()
    except TypeError as error:
        raise UserCodeError(f"keys emitted by {where} are not mutually comparable: {error}") from None
    return KeysOnly(keys)


Segment = tuple[str, int, int]


def _write_frame(handle: Any, chunk: list[tuple[Any, Any]]) -> int:
    if _values_all_none(chunk):
        # Keys only (a sort's records): msgpack packs a list of keys about three
        # times faster than the same keys in (key, None) pairs.
        return _write_payload(handle, _packer.pack(list(map(_KEY0, chunk))), _KEYS_ONLY)
    return _write_payload(handle, _packer.pack(chunk), 0)


def _write_payload(handle: Any, payload: bytes, flags: int) -> int:
    # The flags seed the checksum, so a flipped flag bit is caught too.
    handle.write(_FRAME.pack(len(payload) | flags, crc32(payload, flags)))
    handle.write(payload)
    return _FRAME.size + len(payload)


def write_keys(handle: Any, keys: list[Any], chunk_records: int) -> int:
    """Write keys whose values are all None as a run of keys-only frames."""
    written = 0
    for start in range(0, len(keys), chunk_records):
        written += _write_payload(handle, _packer.pack(keys[start : start + chunk_records]), _KEYS_ONLY)
    return written


def write_pairs(handle: Any, pairs: Iterable[tuple[Any, Any]], chunk_records: int) -> int:
    """Write pairs as a run (frames of at most ``chunk_records`` pairs); return
    the bytes written."""
    written = 0
    if isinstance(pairs, list):
        for start in range(0, len(pairs), chunk_records):
            written += _write_frame(handle, pairs[start : start + chunk_records])
        return written
    iterator = iter(pairs)
    while chunk := list(itertools.islice(iterator, chunk_records)):
        written += _write_frame(handle, chunk)
    return written


def _run_pairs(segment: Segment, origins: dict[Segment, MapOutputRef]) -> Iterator[tuple[Any, Any]]:
    origin = origins.get(segment)
    if origin is None:
        return iter_pairs(*segment)
    return itertools.chain.from_iterable(fetch_chunks(origin))


def merge_segments(
    segments: list[Segment], *, fan_in: int, chunk_records: int, scratch_prefix: str,
    origins: dict[Segment, MapOutputRef] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """k-way merge of sorted runs, at most ``fan_in`` open at once: extra runs are
    merged in passes into temporary runs first (each removed once read). A run
    listed in ``origins`` is map output, whose read errors are ``FetchFailed``."""
    segments = [s for s in segments if s[2] > 0]
    origins = origins or {}
    temporaries: list[str] = []
    generation = 0
    while len(segments) > fan_in:
        merged: list[Segment] = []
        for start in range(0, len(segments), fan_in):
            group = segments[start : start + fan_in]
            if len(group) == 1:
                merged.append(group[0])
                continue
            path = f"{scratch_prefix}.merge{generation}-{start}"
            with open(path, "wb") as handle:
                stream = heapq.merge(*(_run_pairs(s, origins) for s in group), key=_KEY0)
                length = write_pairs(handle, stream, chunk_records)
            temporaries.append(path)
            merged.append((path, 0, length))
        segments = merged
        generation += 1
    try:
        if len(segments) == 1:
            yield from _run_pairs(segments[0], origins)
        else:
            yield from heapq.merge(*(_run_pairs(s, origins) for s in segments), key=_KEY0)
    finally:
        for path in temporaries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _sort(pairs: list[tuple[Any, Any]], where: str) -> None:
    try:
        pairs.sort(key=_KEY0)
    except TypeError as error:
        raise UserCodeError(f"keys emitted by {where} are not mutually comparable: {error}") from None


def _combine(
    combiner: Callable[[Any, Iterator[Any]], Any], pairs: list[tuple[Any, Any]]
) -> list[tuple[Any, Any]]:
    """Run the combiner over each key of sorted ``pairs``. A key with one value is
    passed through: a combiner may run zero or more times (as in Hadoop), and most
    keys of an in-mapper-combined output have exactly one value."""
    keys = list(map(_KEY0, pairs))
    if not any(map(operator.eq, keys, keys[1:])):
        return pairs  # every key once (checked at C speed): nothing to combine
    combined: list[tuple[Any, Any]] = []
    append = combined.append
    index = 0
    size = len(pairs)
    while index < size:
        key = pairs[index][0]
        end = index + 1
        while end < size and pairs[end][0] == key:
            end += 1
        if end == index + 1:
            append(pairs[index])
        else:
            try:
                out = combiner(key, iter([value for _, value in pairs[index:end]]))
                if out is not None:
                    for new_key, new_value in out:
                        append((new_key, new_value))
            except Exception as error:
                raise UserCodeError(f"combiner raised on key {key!r}: {_describe(error)}",
                                    detail=traceback.format_exc()) from error
        index = end
    return combined


def _fold_sorted(fold: Callable[[Any, Any], Any], pairs: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Fold the values of each key of sorted ``pairs`` (insertion order keeps the
    result sorted)."""
    keys = list(map(_KEY0, pairs))
    if not any(map(operator.eq, keys, keys[1:])):
        return pairs
    return _fold_into_dict(fold, pairs)


def _fold_into_dict(fold: Callable[[Any, Any], Any], pairs: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    totals: dict[Any, Any] = {}
    get = totals.get
    missing = _MISSING
    try:
        for key, value in pairs:
            current = get(key, missing)
            totals[key] = value if current is missing else fold(current, value)
    except FetchFailed:
        raise
    except Exception as error:
        raise UserCodeError(f"reduce_with raised: {_describe(error)}", detail=traceback.format_exc()) from error
    return list(totals.items())


def _fold_stream(fold: Callable[[Any, Any], Any], pairs: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    """Fold consecutive equal keys of a sorted stream."""
    current_key: Any = _MISSING
    total: Any = None
    try:
        for key, value in pairs:
            if current_key is not _MISSING and key == current_key:
                total = fold(total, value)
                continue
            if current_key is not _MISSING:
                yield current_key, total
            current_key, total = key, value
    except FetchFailed:
        raise
    except Exception as error:
        raise UserCodeError(f"reduce_with raised: {_describe(error)}", detail=traceback.format_exc()) from error
    if current_key is not _MISSING:
        yield current_key, total


def _combine_stream(
    combiner: Callable[[Any, Iterator[Any]], Any], pairs: Iterable[tuple[Any, Any]], batch: int
) -> Iterator[tuple[Any, Any]]:
    """``_combine`` over a sorted stream, a key-aligned batch at a time (bounded memory)."""
    pending: list[tuple[Any, Any]] = []
    for pair in pairs:
        if len(pending) >= batch and pair[0] != pending[-1][0]:
            yield from _combine(combiner, pending)
            pending = []
        pending.append(pair)
    if pending:
        yield from _combine(combiner, pending)


# ------------------------------------------------------------------- map side


def _check_buckets(assignments: list[Any], keys: list[Any], reducers: int) -> None:
    """Every bucket a job's partitioner chose is an int in [0, R) (C-level passes)."""
    if len(assignments) != len(keys):
        raise ValueError(f"partitioner_block gave {len(assignments)} buckets for {len(keys)} keys")
    if set(map(type, assignments)) != {int} or min(assignments) < 0 or max(assignments) >= reducers:
        wrong = next(a for a in assignments if type(a) is not int or not 0 <= a < reducers)
        key = keys[assignments.index(wrong)]
        raise ValueError(f"partitioner put key {key!r} in bucket {wrong!r}, not in [0, {reducers})")


class _MapBuffer:
    """R buckets of pairs with an estimated size; spills sorted runs over budget.

    Pairs whose values are all None (a sort's records) are kept apart, as bare
    keys in ``key_buckets``, when the step has no combiner and no fold: a key
    costs a list slot where a pair costs a tuple too, and a bucket of keys alone
    is sorted and packed without building or taking apart a tuple per record."""

    def __init__(self, *, step: Step, reducers: int, config: MapReduceConfig, prefix: str) -> None:
        self.reducers = reducers
        self.buckets: list[list[tuple[Any, Any]]] = [[] for _ in range(reducers)]
        self.key_buckets: list[list[Any]] = [[] for _ in range(reducers)]
        self.partitioner = step.partitioner
        self.partitioner_block = step.partitioner_block
        self.combiner = step.combiner
        self.fold = step.reduce_with
        # A combiner or a fold works on pairs: keys alone only without them.
        self.keys_apart = self.combiner is None and self.fold is None
        self.config = config
        self.prefix = prefix
        self.count = 0
        self.key_count = 0
        self.check_at = _ESTIMATE_EVERY
        self.pair_bytes = float(_PAIR_OVERHEAD_BYTES + 64)
        self.key_bytes = float(_KEY_OVERHEAD_BYTES + 64)
        self.spills: list[tuple[str, list[int], list[int]]] = []

    def add(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        """Buffer mapper output, a batch at a time: type checks, partitioning and
        distribution to buckets run as C-level ``map``/``compress`` passes over
        the batch, so the per-pair cost in Python is small."""
        if type(pairs) is Keys:
            self._add_keys(pairs.keys)
            return
        if isinstance(pairs, list) and len(pairs) <= _BATCH_RECORDS:
            self._add_batch(pairs)
            return
        iterator = iter(pairs)
        while True:
            batch = list(itertools.islice(iterator, _BATCH_RECORDS))
            if not batch:
                return
            self._add_batch(batch)

    def _add_keys(self, keys: list[Any]) -> None:
        """``Keys`` from the job: pairs whose values are all None, as keys."""
        for start in range(0, len(keys), _BATCH_RECORDS):
            batch = keys[start : start + _BATCH_RECORDS]
            if self.keys_apart:
                self._distribute(batch, batch, self.key_buckets)
                self.key_count += len(batch)
                self._maybe_spill(batch[-1], None, as_key=True)
            else:
                self._add_batch(list(zip(batch, itertools.repeat(None))))

    def _add_batch(self, batch: list[tuple[Any, Any]]) -> None:
        if not batch:
            return
        pair_kinds: set[type] = set(map(type, batch))
        if not pair_kinds <= _PAIR_TYPES or set(map(len, batch)) != {2}:
            bad: Any = next(p for p in batch if type(p) not in _PAIR_TYPES or len(p) != 2)
            raise TypeError(f"mapper output {bad!r} is not a (key, value) pair")
        keys = list(map(_KEY0, batch))
        values = list(map(_VALUE1, batch))
        value_kinds = set(map(type, values))
        _check_column(values, value_kinds, "value")
        if self.keys_apart and value_kinds == _NONE_KIND:
            self._distribute(keys, keys, self.key_buckets)
            self.key_count += len(keys)
            self._maybe_spill(keys[-1], None, as_key=True)
        else:
            if pair_kinds != {tuple}:
                batch = list(zip(keys, values))
            self._distribute(batch, keys, self.buckets)
            self.count += len(batch)
            self._maybe_spill(keys[-1], values[-1], as_key=False)

    def _distribute(self, items: list[Any], keys: list[Any], buckets: list[list[Any]]) -> None:
        """Check ``keys`` and append each of ``items`` (the pairs, or the keys
        themselves) to the bucket its key's partition names."""
        key_kinds = set(map(type, keys))
        _check_column(keys, key_kinds, "key")
        reducers = self.reducers
        if reducers == 1:
            buckets[0].extend(items)
            return
        if self.partitioner_block is not None:
            assignments = list(self.partitioner_block(keys, reducers))
        elif self.partitioner is not None:
            assignments = list(map(self.partitioner, keys, itertools.repeat(reducers)))
        else:
            assignments = _stable_buckets(keys, key_kinds, reducers)
        if reducers <= _COMPRESS_REDUCERS_MAX:
            # The bucket numbers as one byte string (bytes() also refuses
            # non-integers and negatives); each bucket takes its items with a
            # translate into a 0/1 mask and a compress, all C code.
            try:
                numbers = bytes(assignments)
            except (TypeError, ValueError):
                numbers = b""
            if len(numbers) != len(keys) or max(numbers) >= reducers:
                _check_buckets(assignments, keys, reducers)
            for bucket_index, bucket in enumerate(buckets):
                bucket.extend(itertools.compress(items, numbers.translate(_BUCKET_MASKS[bucket_index])))
        else:
            if self.partitioner_block is not None or self.partitioner is not None:
                _check_buckets(assignments, keys, reducers)
            for item, bucket_index in zip(items, assignments):
                buckets[bucket_index].append(item)

    def _maybe_spill(self, key: Any, value: Any, *, as_key: bool) -> None:
        """Every ``_ESTIMATE_EVERY`` records, re-estimate the buffer's size from
        the last record (a moving average) and spill when over budget."""
        if self.count + self.key_count < self.check_at:
            return
        if as_key:
            sample = _KEY_OVERHEAD_BYTES + sys.getsizeof(key)
            self.key_bytes = 0.9 * self.key_bytes + 0.1 * sample
        else:
            sample = _PAIR_OVERHEAD_BYTES + sys.getsizeof(key) + sys.getsizeof(value)
            self.pair_bytes = 0.9 * self.pair_bytes + 0.1 * sample
        self.check_at = self.count + self.key_count + _ESTIMATE_EVERY
        if self.count * self.pair_bytes + self.key_count * self.key_bytes > self.config.map_buffer_bytes_max:
            self.spill(f"{self.prefix}.spill{len(self.spills)}")

    def _sorted_buckets(self) -> list[list[tuple[Any, Any]] | KeysOnly]:
        result: list[list[tuple[Any, Any]] | KeysOnly] = []
        for bucket, keys in zip(self.buckets, self.key_buckets):
            if not bucket:
                result.append(_sorted_keys(keys, "the mapper"))
                continue
            if keys:
                bucket.extend(zip(keys, itertools.repeat(None)))
            _sort(bucket, "the mapper")
            if self.fold is not None and bucket:
                bucket = _fold_sorted(self.fold, bucket)
            if self.combiner is not None and bucket:
                combined = _combine(self.combiner, bucket)
                if combined is not bucket:
                    _sort(combined, "the combiner")
                bucket = combined
            result.append(bucket)
        return result

    def spill(self, path: str) -> None:
        offsets, lengths = self._write(path, self._sorted_buckets())
        self.spills.append((path, offsets, lengths))
        self.buckets = [[] for _ in range(self.reducers)]
        self.key_buckets = [[] for _ in range(self.reducers)]
        self.count = 0
        self.key_count = 0
        self.check_at = _ESTIMATE_EVERY

    def _write(self, path: str, buckets: Iterable[Iterable[tuple[Any, Any]] | KeysOnly]
               ) -> tuple[list[int], list[int]]:
        offsets: list[int] = []
        lengths: list[int] = []
        position = 0
        with open(path, "wb") as handle:
            for bucket in buckets:
                try:
                    if isinstance(bucket, KeysOnly):
                        length = write_keys(handle, bucket.keys, self.config.chunk_records_max)
                    else:
                        length = write_pairs(handle, bucket, self.config.chunk_records_max)
                except (TypeError, ValueError, OverflowError) as error:
                    raise UserCodeError(f"map output cannot be serialized: {_describe(error)}") from None
                offsets.append(position)
                lengths.append(length)
                position += length
        return offsets, lengths

    def finish(self, path: str) -> tuple[list[int], list[int]]:
        """Write the task's output file (merging spills if any); return the buckets'
        offsets and lengths."""
        if not self.spills:
            return self._write(path, self._sorted_buckets())
        if self.count or self.key_count:
            self.spill(f"{self.prefix}.spill{len(self.spills)}")

        def merged(bucket: int) -> Iterable[tuple[Any, Any]]:
            segments = [(p, offs[bucket], lens[bucket]) for p, offs, lens in self.spills]
            stream: Iterable[tuple[Any, Any]] = merge_segments(
                segments, fan_in=self.config.merge_fan_in_max,
                chunk_records=self.config.chunk_records_max, scratch_prefix=f"{self.prefix}.b{bucket}",
            )
            if self.combiner is not None:
                stream = _combine_stream(self.combiner, stream, self.config.chunk_records_max)
            if self.fold is not None:
                stream = _fold_stream(self.fold, stream)
            return stream

        try:
            return self._write(path, (merged(b) for b in range(self.reducers)))
        finally:
            self.discard_spills()

    def discard_spills(self) -> None:
        for spill_path, _, _ in self.spills:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spill_path)
        self.spills.clear()


def _counter_values(job: Job) -> tuple[CounterValue, ...]:
    return tuple(
        CounterValue(group=group, name=name, value=value)
        for (group, name), value in sorted(job.take_counters().items())
    )


def _step_of(job: Job, step_index: int) -> Step:
    steps = job.steps()
    if not 0 <= step_index < len(steps):
        raise UserCodeError(f"the job has {len(steps)} steps, not step {step_index}")
    return steps[step_index]


def run_map(job_factory: JobFactory, assign: AssignMap, *, scratch_dir: str,
            config: MapReduceConfig) -> TaskCompleted:
    """Run one map attempt; raises ``UserCodeError`` when the job's code fails."""
    job = job_factory()
    job.partition_plan = msgpack.unpackb(assign.plan, raw=False, use_list=False) if assign.plan else None
    step = _step_of(job, assign.step)
    reader: InputFormat = job.INPUT if assign.step == 0 else MsgpackRecords()
    prefix = os.path.join(scratch_dir, f"s{assign.step}-m{assign.task}-a{assign.attempt}")
    buffer = _MapBuffer(step=step, reducers=assign.reducers, config=config, prefix=prefix)
    mapper = step.mapper or (lambda key, value: ((key, value),))
    skip = {(s.path, s.offset) for s in assign.skip}
    skipped: list[SkipRecord] = []
    records_in = 0
    bytes_in = 0
    try:
        _run_hook(step.mapper_init, buffer, "mapper_init")
        for split in assign.splits:
            blocks = reader.read(split.path, split.start, split.end)
            while True:
                try:
                    block = next(blocks, None)
                except InputDecodeError as error:
                    raise UserCodeError(f"input cannot be decoded: {error}", path=error.path,
                                        offset=error.offset) from None
                except OSError as error:
                    raise UserCodeError(f"input cannot be read: {_describe(error)}", path=split.path) from None
                if block is None:
                    break
                records_in += len(block.values)
                bytes_in += block.nbytes
                job.input_path = block.path
                if any(path == split.path for path, _ in skip):
                    block = _drop_skipped(reader, block, skip, skipped)
                if step.mapper_block is not None:
                    _map_whole_block(step.mapper_block, block, buffer)
                else:
                    _map_block(mapper, reader, block, buffer)
        _run_hook(step.mapper_final, buffer, "mapper_final")
        path = prefix + ".out"
        offsets, lengths = buffer.finish(path)
    except BaseException:
        buffer.discard_spills()
        raise
    return TaskCompleted(
        attempt=assign.attempt, kind=TaskKind.MAP, task=assign.task, path=path,
        offsets=tuple(offsets), lengths=tuple(lengths), counters=_counter_values(job),
        records_in=records_in, bytes_in=bytes_in, skipped=tuple(skipped),
    )


def _run_hook(hook: Callable[[], Any] | None, buffer: _MapBuffer, name: str) -> None:
    if hook is None:
        return
    try:
        out = hook()
        if out is not None:
            buffer.add(out)
    except Exception as error:
        raise UserCodeError(f"{name} raised: {_describe(error)}", detail=traceback.format_exc()) from error


def _drop_skipped(reader: InputFormat, block: RecordBlock, skip: set[tuple[str, int]],
                  skipped: list[SkipRecord]) -> RecordBlock:
    offsets = reader.record_offsets(block)
    keep = [i for i, offset in enumerate(offsets) if (block.path, offset) not in skip]
    if len(keep) == len(offsets):
        return block
    skipped.extend(SkipRecord(path=block.path, offset=offsets[i]) for i in range(len(offsets))
                   if (block.path, offsets[i]) in skip)
    keys = None if block.keys is None else [block.keys[i] for i in keep]
    values = [block.values[i] for i in keep]
    # Record offsets must stay computable after dropping: fall back to explicit ones.
    return _ExplicitBlock(path=block.path, offset=block.offset, keys=keys, values=values,
                          nbytes=block.nbytes, offsets=[offsets[i] for i in keep])


class _ExplicitBlock(RecordBlock):
    __slots__ = ("offsets",)

    def __init__(self, *, path: str, offset: int, keys: list[Any] | None, values: list[Any],
                 nbytes: int, offsets: list[int]) -> None:
        super().__init__(path=path, offset=offset, keys=keys, values=values, nbytes=nbytes)
        self.offsets = offsets


def _map_whole_block(mapper_block: Callable[[RecordBlock], Any], block: RecordBlock,
                     buffer: _MapBuffer) -> None:
    try:
        out = mapper_block(block)
        if out is not None:
            buffer.add(out)
    except UserCodeError:
        raise
    except Exception as error:
        raise UserCodeError(
            f"mapper_block raised on the block of {len(block.values)} records starting here: "
            f"{_describe(error)}", path=block.path, offset=block.offset, detail=traceback.format_exc(),
        ) from error


def _map_block(mapper: Callable[[Any, Any], Any], reader: InputFormat, block: RecordBlock,
               buffer: _MapBuffer) -> None:
    index = 0
    add = buffer.add
    try:
        if block.keys is None:
            for index, value in enumerate(block.values):  # noqa: B007 (index used on error)
                out = mapper(None, value)
                if out is not None:
                    add(out)
        else:
            for index, (key, value) in enumerate(zip(block.keys, block.values)):  # noqa: B007
                out = mapper(key, value)
                if out is not None:
                    add(out)
    except UserCodeError:
        raise
    except Exception as error:
        offsets = block.offsets if isinstance(block, _ExplicitBlock) else reader.record_offsets(block)
        raise UserCodeError(
            f"mapper raised: {_describe(error)}", path=block.path, offset=offsets[index],
            detail=traceback.format_exc(),
        ) from error


# ------------------------------------------------------------------ reduce side


def part_name(task: int) -> str:
    return f"part-{task:05d}"


def run_reduce(job_factory: JobFactory, assign: AssignReduce, *, scratch_dir: str,
               config: MapReduceConfig) -> TaskCompleted:
    """Run one reduce attempt and commit its part file by rename."""
    job = job_factory()
    steps = job.steps()
    step = _step_of(job, assign.step)
    final_step = assign.step == len(steps) - 1
    # A later step reads this step's parts as plain msgpack (MsgpackRecords).
    output = job.OUTPUT if final_step else MsgpackOutput()
    reducer = step.reducer
    os.makedirs(assign.output_dir, exist_ok=True)
    final_path = os.path.join(assign.output_dir, part_name(assign.task))
    if mutant(COMMIT_WITHOUT_RENAME):
        temp_path = final_path
    else:
        temp_dir = os.path.join(assign.output_dir, "_temporary")
        os.makedirs(temp_dir, exist_ok=True)
        temp_path = os.path.join(temp_dir, f"{part_name(assign.task)}.attempt-{assign.attempt}")
    records_out = 0
    stream = _reduce_input(assign.inputs, config,
                           os.path.join(scratch_dir, f"s{assign.step}-r{assign.task}-a{assign.attempt}"),
                           step.reduce_with)
    try:
        with open(temp_path, "wb") as handle:
            pending: list[tuple[Any, Any]] = []

            def flush() -> None:
                output.write(handle, pending)
                pending.clear()

            def collect(out: Any, where: str) -> None:
                nonlocal records_out
                chunk_records = config.chunk_records_max
                append = pending.append
                for key, value in out:
                    if type(key) not in _SCALARS or type(value) not in _SCALARS:
                        check_pair(key, value)
                    append((key, value))
                    if len(pending) >= chunk_records:
                        records_out += len(pending)
                        flush()

            _reduce_hook(step.reducer_init, "reducer_init", collect)
            if isinstance(stream, KeysOnly) and reducer is None:
                # A sort: the sorted keys are the output, a chunk at a time, as
                # keys when the format takes them (no pair per record).
                keys = stream.keys
                chunk_records = config.chunk_records_max
                write_keys: Callable[[Any, list[Any]], None] | None = getattr(output, "write_keys", None)
                for start in range(0, len(keys), chunk_records):
                    if write_keys is not None:
                        chunk = keys[start : start + chunk_records]
                        write_keys(handle, chunk)
                        records_out += len(chunk)
                        continue
                    pending.extend(zip(keys[start : start + chunk_records], itertools.repeat(None)))
                    records_out += len(pending)
                    flush()
            elif reducer is None or step.reduce_with is not None:
                # The identity reducer, or a fold already applied to the input:
                # the sorted pairs are the output.
                if isinstance(stream, KeysOnly):
                    stream = stream.pairs()
                if isinstance(stream, list):
                    for start in range(0, len(stream), config.chunk_records_max):
                        pending.extend(stream[start : start + config.chunk_records_max])
                        records_out += len(pending)
                        flush()
                else:
                    collect(stream, "reducer")
            else:
                if isinstance(stream, KeysOnly):
                    stream = stream.pairs()
                for key, values in _groups(stream):
                    try:
                        out = reducer(key, values)
                        if out is not None:
                            collect(out, "reducer")
                    except (UserCodeError, FetchFailed):
                        raise
                    except Exception as error:
                        raise UserCodeError(f"reducer raised on key {key!r}: {_describe(error)}",
                                            detail=traceback.format_exc()) from error
            _reduce_hook(step.reducer_final, "reducer_final", collect)
            records_out += len(pending)
            flush()
            if config.fsync_output:
                handle.flush()
                os.fsync(handle.fileno())
        if temp_path != final_path:
            os.replace(temp_path, final_path)
    except BaseException:
        if temp_path != final_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
        raise
    return TaskCompleted(
        attempt=assign.attempt, kind=TaskKind.REDUCE, task=assign.task, path=final_path,
        counters=_counter_values(job), records_out=records_out,
    )


def _groups(stream: Iterator[tuple[Any, Any]] | list[tuple[Any, Any]]) -> Iterator[tuple[Any, Iterator[Any]]]:
    """(key, values) for each key of a sorted stream."""
    if not isinstance(stream, list):
        for key, group in itertools.groupby(stream, key=_KEY0):
            yield key, (value for _, value in group)
        return
    index = 0
    size = len(stream)
    while index < size:
        key, value = stream[index]
        end = index + 1
        while end < size and stream[end][0] == key:
            end += 1
        if end == index + 1:
            yield key, iter((value,))
        else:
            yield key, iter([pair[1] for pair in stream[index:end]])
        index = end


def _reduce_hook(hook: Callable[[], Any] | None, name: str, collect: Callable[[Any, str], None]) -> None:
    if hook is None:
        return
    try:
        out = hook()
        if out is not None:
            collect(out, name)
    except Exception as error:
        raise UserCodeError(f"{name} raised: {_describe(error)}", detail=traceback.format_exc()) from error


def _reduce_input(refs: tuple[MapOutputRef, ...], config: MapReduceConfig, scratch_prefix: str,
                  fold: Callable[[Any, Any], Any] | None = None,
                  ) -> list[tuple[Any, Any]] | KeysOnly | Iterator[tuple[Any, Any]]:
    """The bucket's pairs from every map task, in key order (folded by key when
    the step has ``reduce_with``); ``KeysOnly`` when every value is None."""
    present = [ref for ref in refs if ref.length > 0]
    total = sum(ref.length for ref in present)
    if total <= config.reduce_memory_bytes_max:
        failures: list[FetchFailed] = []

        def readable_frames() -> Iterator[Frame]:
            # Every input is tried, so one report names all the lost map output.
            for ref in present:
                try:
                    yield from fetch_frames(ref)
                except FetchFailed as failure:
                    failures.append(failure)

        keys: list[Any] = []
        if fold is not None:
            # Hash aggregation: no sort of the pairs, only of the distinct keys.
            pairs = _fold_into_dict(fold, itertools.chain.from_iterable(map(_frame_pairs, readable_frames())))
        else:
            pairs = []
            for _, keys_only, items in readable_frames():
                (keys if keys_only else pairs).extend(items)
        if failures:
            raise FetchFailed([ref for f in failures for ref in f.refs],
                              "; ".join(f.reason for f in failures))
        if not pairs:
            return _sorted_keys(keys, "the mappers")
        pairs.extend(zip(keys, itertools.repeat(None)))
        _sort(pairs, "the mappers")
        return pairs
    origins = {(ref.path, ref.offset, ref.length): ref for ref in present}
    merged = merge_segments(list(origins), fan_in=config.merge_fan_in_max,
                            chunk_records=config.chunk_records_max, scratch_prefix=scratch_prefix,
                            origins=origins)
    return merged if fold is None else _fold_stream(fold, merged)


# -------------------------------------------------------------------- attempts


@contextlib.contextmanager
def _cyclic_gc(enabled: bool) -> Iterator[None]:
    """Run the block with the cyclic garbage collector on or off. A task buffers
    millions of small tuples that all survive; with the collector on, each is
    scanned several times as the heap grows (about 12% of a sort's CPU time).
    Reference counting still frees everything that is not a cycle."""
    was_enabled = gc.isenabled()
    if not enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run_attempt(job_factory: JobFactory, assign: AssignMap | AssignReduce, *,
                scratch_dir: str, config: MapReduceConfig) -> TaskCompleted | TaskFailed:
    """Run one attempt and turn any failure into a ``TaskFailed`` report."""
    kind = TaskKind.MAP if isinstance(assign, AssignMap) else TaskKind.REDUCE
    try:
        with _cyclic_gc(config.cyclic_gc_in_tasks):
            if isinstance(assign, AssignMap):
                return run_map(job_factory, assign, scratch_dir=scratch_dir, config=config)
            return run_reduce(job_factory, assign, scratch_dir=scratch_dir, config=config)
    except FetchFailed as error:
        return TaskFailed(attempt=assign.attempt, kind=kind, task=assign.task, error=error.error,
                          detail=traceback.format_exc(),
                          lost_map_attempts=tuple(ref.attempt for ref in error.refs))
    except UserCodeError as error:
        return TaskFailed(attempt=assign.attempt, kind=kind, task=assign.task, error=error.error,
                          detail=error.detail or traceback.format_exc(), path=error.path,
                          offset=error.offset, user_error=True)
    except Exception as error:
        return TaskFailed(attempt=assign.attempt, kind=kind, task=assign.task,
                          error=_describe(error), detail=traceback.format_exc(), user_error=False)


def worker_main(conn: Connection, job_factory: JobFactory, worker: NodeId, scratch_dir: str,
                config: MapReduceConfig) -> None:
    """A worker process: announce itself, then run what the master assigns, one
    attempt at a time, until ``Shutdown`` or the pipe closes."""
    del worker  # the name is the master's; kept in the signature for logs
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    os.makedirs(scratch_dir, exist_ok=True)
    conn.send_bytes(encode(WorkerReady()))
    while True:
        try:
            message = decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        match message:
            case AssignMap() | AssignReduce():
                result = run_attempt(job_factory, message, scratch_dir=scratch_dir, config=config)
                conn.send_bytes(encode(result))
            case CancelAttempt():
                # Attempts run to the end one at a time, so a cancel always arrives
                # after its attempt was reported; the master ignores that report.
                continue
            case Shutdown():
                return
            case _:
                continue
