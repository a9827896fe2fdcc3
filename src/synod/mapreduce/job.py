"""The job API: what a user writes, in one file.

A job is a subclass of ``Job`` (mrjob's model). A one-step job overrides some of
``mapper``, ``combiner``, ``reducer``, ``mapper_init``/``mapper_final`` (in-mapper
combining), ``mapper_block`` (one call per block of records, for speed), ``reducer_init``/``reducer_final`` and ``partitioner``
(or ``partitioner_block``, one call per batch of keys); a multi-step job
returns a list of ``Step`` from ``steps()``. Mappers, combiners and reducers are
generators of ``(key, value)`` pairs (or return None when they emit nothing).
Keys and values must be msgpack values (str, bytes, int, float, bool, None, tuples,
lists and dicts of those); keys of one job must be mutually comparable, because
each output part is sorted by key.

Class attributes choose the plumbing: ``INPUT`` (a reader from
``synod.mapreduce.formats``: ``TextLines``, ``WholeFiles``, or your own), ``OUTPUT``
(``TextOutput`` or ``MsgpackOutput``), ``REDUCERS`` (the job's preferred R),
``SKIP_BAD_RECORDS`` (skip a record that crashes the mapper twice),
``REDUCE_WITH`` (a binary function folding each key's values, instead of a
combiner and a reducer) and
``SAMPLE_RECORDS`` (input records handed to ``sample_partitions`` before the first
step, to build a range partitioner as TeraSort does).
"""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from synod.mapreduce.formats import InputFormat, OutputFormat, RecordBlock, TextLines, TextOutput

Pairs = Iterable[tuple[Any, Any]] | None
Mapper = Callable[[Any, Any], Pairs]
Reducer = Callable[[Any, Iterator[Any]], Pairs]
Hook = Callable[[], Pairs]
BlockMapper = Callable[[RecordBlock], Pairs]
Partitioner = Callable[[Any, int], int]
BlockPartitioner = Callable[[list[Any], int], Iterable[int]]
Sampler = Callable[[list[tuple[Any, Any]], int], Any]
Fold = Callable[[Any, Any], Any]


_packer = msgpack.Packer(use_bin_type=True)


def stable_hash(key: Any) -> int:
    """A hash of a key that is the same in every process on every machine: CRC-32
    of its UTF-8 bytes for a str, of the bytes themselves for bytes, of its msgpack
    encoding for anything else.

    Never Python's ``hash()``, which differs between processes for str and bytes
    (PYTHONHASHSEED): every map attempt on every machine must agree."""
    kind = type(key)
    if kind is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if kind is bytes:
        return zlib.crc32(key)
    return zlib.crc32(_packer.pack(key))


def stable_partition(key: Any, reducers: int) -> int:
    """The default partitioner: ``stable_hash(key) mod R``."""
    return stable_hash(key) % reducers


class Keys:
    """Map output whose values are all None, given as a list of keys: what a
    sort's mapper emits. A map-side method (``mapper_block`` above all) may
    return ``Keys(block.values)`` instead of ``zip(block.values,
    itertools.repeat(None))``: the same pairs, without a tuple built and taken
    apart again for each record. Iterated, it gives the ``(key, None)`` pairs."""

    __slots__ = ("keys",)

    def __init__(self, keys: Iterable[Any]) -> None:
        self.keys: list[Any] = keys if type(keys) is list else list(keys)

    def __iter__(self) -> Iterator[tuple[Any, None]]:
        return zip(self.keys, itertools.repeat(None))

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One map-shuffle-reduce round of a job. Unset parts are the identity."""

    mapper: Mapper | None = None
    combiner: Reducer | None = None
    reducer: Reducer | None = None
    mapper_init: Hook | None = None
    mapper_final: Hook | None = None
    mapper_block: BlockMapper | None = None
    reducer_init: Hook | None = None
    reducer_final: Hook | None = None
    partitioner: Partitioner | None = None
    #: A partitioner of a batch of keys at once (used instead of ``partitioner``).
    partitioner_block: BlockPartitioner | None = None
    sampler: Sampler | None = None
    #: An associative, commutative function of two values: when set, the step's
    #: combiner and reducer are a fold of each key's values with it, done in bulk
    #: with hash aggregation (Spark's ``reduceByKey``), and ``combiner`` and
    #: ``reducer`` must be unset.
    reduce_with: Fold | None = None

    def __post_init__(self) -> None:
        if self.reduce_with is not None and (self.combiner is not None or self.reducer is not None):
            raise ValueError("a step with reduce_with has no combiner or reducer (the fold is both)")


class Job:
    """Base class of a MapReduce job. See the module comment."""

    INPUT: ClassVar[InputFormat] = TextLines()
    OUTPUT: ClassVar[OutputFormat] = TextOutput()
    REDUCERS: ClassVar[int | None] = None
    SKIP_BAD_RECORDS: ClassVar[bool] = False
    SAMPLE_RECORDS: ClassVar[int] = 0
    #: A function of two values (``operator.add`` for a sum) that replaces the
    #: combiner and the reducer: each key's output is the fold of its values.
    #: Faster than a ``reducer`` (no Python call per key); see ``Step.reduce_with``.
    REDUCE_WITH: ClassVar[Fold | None] = None

    #: The step's partition plan (what ``sample_partitions`` returned), set by the
    #: framework before any map task runs. None when the job samples nothing.
    partition_plan: Any = None
    #: The file the mapper's current record comes from (set by the framework).
    input_path: str = ""

    def mapper(self, key: Any, value: Any) -> Pairs:
        return ((key, value),)

    def combiner(self, key: Any, values: Iterator[Any]) -> Pairs:
        raise NotImplementedError  # never called unless overridden

    def reducer(self, key: Any, values: Iterator[Any]) -> Pairs:
        """The identity when not overridden (and then run in bulk, without a
        call per key: a sort's reduce is a merge and a write)."""
        return ((key, value) for value in values)

    def mapper_init(self) -> Pairs:
        return None

    def mapper_final(self) -> Pairs:
        return None

    def mapper_block(self, block: RecordBlock) -> Pairs:
        """Map a whole block of input records (about 1 MB) in one call, instead of
        calling ``mapper`` per record: for mappers whose per-call overhead matters
        (word count over ``block.values``). A failure is reported at the block's
        first record; bad-record skipping needs the per-record ``mapper``."""
        raise NotImplementedError  # never called unless overridden

    def reducer_init(self) -> Pairs:
        return None

    def reducer_final(self) -> Pairs:
        return None

    def partitioner(self, key: Any, reducers: int) -> int:
        return stable_partition(key, reducers)

    def partitioner_block(self, keys: list[Any], reducers: int) -> Iterable[int]:
        """The bucket of each of ``keys`` (a batch of a few thousand map output
        keys), in one call instead of one ``partitioner`` call per key: for a
        partitioner that can be written with C-level ``map`` (TeraSort's range
        partitioner). Used instead of ``partitioner`` when overridden."""
        raise NotImplementedError  # never called unless overridden

    def sample_partitions(self, records: list[tuple[Any, Any]], reducers: int) -> Any:
        """Build the partition plan from sampled input records (TeraSort)."""
        return None

    def steps(self) -> list[Step]:
        """The job's steps; by default one step made of the overridden methods."""
        cls = type(self)

        def overridden(name: str) -> Any:
            return getattr(self, name) if getattr(cls, name) is not getattr(Job, name) else None

        return [
            Step(
                mapper=self.mapper,
                combiner=overridden("combiner"),
                reducer=overridden("reducer"),
                mapper_init=overridden("mapper_init"),
                mapper_final=overridden("mapper_final"),
                mapper_block=overridden("mapper_block"),
                reducer_init=overridden("reducer_init"),
                reducer_final=overridden("reducer_final"),
                partitioner=overridden("partitioner"),
                partitioner_block=overridden("partitioner_block"),
                sampler=overridden("sample_partitions"),
                reduce_with=type(self).REDUCE_WITH,
            )
        ]

    # ------------------------------------------------------------------ counters

    def increment_counter(self, group: str, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``group``/``name``. Totals count each task
        once, from its committed attempt: re-executions do not double-count."""
        counters: Counter[tuple[str, str]] | None = self.__dict__.get("_synod_counters")
        if counters is None:
            counters = Counter()
            self.__dict__["_synod_counters"] = counters
        counters[(group, name)] += amount

    def take_counters(self) -> dict[tuple[str, str], int]:
        """The counters incremented since the last call (the framework's hook)."""
        counters: Counter[tuple[str, str]] | None = self.__dict__.pop("_synod_counters", None)
        return dict(counters) if counters else {}
