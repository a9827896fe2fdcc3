"""Small jobs used by the runner, fault and bad-input tests."""

from __future__ import annotations

import operator
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from synod.mapreduce import Job


class CountWords(Job):
    """A plain word count that emits one pair per word (no in-mapper combining)."""

    def mapper(self, key: None, line: str) -> Iterator[tuple[str, int]]:
        for word in line.split():
            yield word, 1

    def combiner(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)

    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        self.increment_counter("test", "keys")
        yield word, sum(counts)


def _first_time(marker: str) -> bool:
    """True exactly once per marker file, across processes (O_EXCL)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class KillMidMap(CountWords):
    """SIGKILLs its own worker process in the middle of a map task, once."""

    MARKER: ClassVar[str] = ""
    TRIGGER: ClassVar[str] = ""

    def mapper(self, key: None, line: str) -> Iterator[tuple[str, int]]:
        if self.TRIGGER in line.split() and _first_time(self.MARKER):
            os.kill(os.getpid(), signal.SIGKILL)
        yield from super().mapper(key, line)


class KillMidReduce(CountWords):
    """SIGKILLs its own process in the middle of a reduce task (after some output
    was written to the part file), once."""

    MARKER: ClassVar[str] = ""
    TRIGGER: ClassVar[str] = ""

    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        if word == self.TRIGGER and _first_time(self.MARKER):
            os.kill(os.getpid(), signal.SIGKILL)
        yield from super().reducer(word, counts)


class LoseMapOutput(CountWords):
    """The first reduce attempt to start deletes, cuts short (``MODE = "truncate"``)
    or flips bytes throughout (``"corrupt"``) every map output file under
    ``SCRATCH``, once: the map workers stay alive but their output is gone, so
    later reduce attempts hit fetch failures."""

    MARKER: ClassVar[str] = ""
    SCRATCH: ClassVar[str] = ""
    MODE: ClassVar[str] = "delete"

    def reducer_init(self) -> None:
        if not _first_time(self.MARKER):
            return
        for path in Path(self.SCRATCH).rglob("s0-m*.out"):
            size = path.stat().st_size
            if self.MODE == "truncate":
                os.truncate(path, size // 3)
            elif self.MODE == "corrupt":
                # A byte every 256 flipped, so every bucket is hit.
                data = bytearray(path.read_bytes())
                for position in range(128, size, 256):
                    data[position] ^= 0x20
                path.write_bytes(bytes(data))
            else:
                path.unlink()


class CountRecords(Job):
    """Counts records; fails on lines starting with 'BAD' (skippable)."""

    SKIP_BAD_RECORDS = True

    def mapper(self, key: None, line: str) -> Iterator[tuple[str, int]]:
        if line.startswith("BAD"):
            raise ValueError(f"cannot parse {line!r}")
        self.increment_counter("records", "good")
        yield "records", 1

    def reducer(self, key: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield key, sum(counts)


class StrictCountRecords(CountRecords):
    SKIP_BAD_RECORDS = False


class SetKey(Job):
    """Emits a key msgpack cannot carry on the line 'set'."""

    def mapper(self, key: None, line: str) -> Iterator[tuple[Any, int]]:
        yield ({line} if line == "set" else line), 1


class RaisingReducer(CountWords):
    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        if word == "boom":
            raise RuntimeError("reducer exploded")
        yield word, sum(counts)


def marker_in(tmp: Path) -> str:
    return str(tmp / "killed.marker")


class BlockMapperFails(Job):
    """A block mapper that fails on the block containing 'poison'."""

    def mapper_block(self, block: Any) -> Iterator[tuple[str, int]]:
        if any(value == "poison" for value in block.values):
            raise KeyError("poison")
        return ((value, 1) for value in block.values)


class BadPartitioner(CountWords):
    def partitioner(self, key: str, reducers: int) -> int:
        return reducers  # one past the last bucket


class ShortBlockPartitioner(CountWords):
    def partitioner_block(self, keys: list[str], reducers: int) -> list[int]:
        return [0] * (len(keys) - 1)  # one bucket short


class AlwaysKilled(CountWords):
    """Kills its worker on every attempt: the task can never complete."""

    def mapper(self, key: None, line: str) -> Iterator[tuple[str, int]]:
        os.kill(os.getpid(), signal.SIGKILL)
        yield from ()


class FoldWords(Job):
    """Word count with REDUCE_WITH, one pair per word (so maps fold duplicates)."""

    REDUCE_WITH = operator.add

    def mapper(self, key: None, line: str) -> Iterator[tuple[str, int]]:
        for word in line.split():
            yield word, 1


class FoldAndReducer(FoldWords):
    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)
