"""The data path: line-aligned splits, stable partitioning, spills and external
merges, bad-record skipping, counters, multi-file input; inline and local runners
agree with a single-process reference."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synod.mapreduce import (
    Job,
    Keys,
    MapReduceConfig,
    RecordBlock,
    TextLines,
    WholeFiles,
    run_job,
    stable_partition,
)
from synod.mapreduce.runner import plan_splits
from synod.mapreduce.worker import CorruptRun, iter_pairs, merge_segments, write_pairs
from tests.mapreduce import data
from tests.mapreduce.jobs import CountRecords, CountWords

ROOT = Path(__file__).resolve().parents[2]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.text(alphabet="ab é\r", max_size=12), max_size=40),
    pieces=st.integers(min_value=1, max_value=30),
    final_newline=st.booleans(),
    block_bytes=st.integers(min_value=1, max_value=64),
)
def test_splits_read_every_line_exactly_once(tmp_path: Path, lines: list[str], pieces: int,
                                             final_newline: bool, block_bytes: int) -> None:
    path = tmp_path / "lines.txt"
    text = "\n".join(lines) + ("\n" if final_newline and lines else "")
    path.write_bytes(text.encode())
    size = path.stat().st_size
    reader = TextLines(block_bytes=block_bytes)
    got: list[str] = []
    offsets: list[int] = []
    for i in range(pieces):
        for block in reader.read(str(path), size * i // pieces, size * (i + 1) // pieces):
            got.extend(block.values)
            offsets.extend(reader.record_offsets(block))
    expected = text.split("\n")
    if text.endswith("\n") or not text:
        expected.pop()
    assert got == expected
    raw = path.read_bytes()
    assert all(o == 0 or raw[o - 1 : o] == b"\n" for o in offsets)


def test_plan_splits_cover_each_file_and_respect_bounds(tmp_path: Path) -> None:
    config = MapReduceConfig(split_bytes_min=100, split_bytes_max=1000)
    files = [("a", 2500), ("b", 0), ("c", 10)]
    splits = plan_splits(files, TextLines(), workers=2, config=config)
    by_file: dict[str, list[tuple[int, int]]] = {}
    for (split,) in splits:
        assert split.end - split.start <= 1000
        by_file.setdefault(split.path, []).append((split.start, split.end))
    assert by_file["a"][0][0] == 0 and by_file["a"][-1][1] == 2500
    assert all(x[1] == y[0] for x, y in zip(by_file["a"], by_file["a"][1:]))
    assert "b" not in by_file and by_file["c"] == [(0, 10)]
    assert len(plan_splits(files, WholeFiles(), workers=2, config=config)) == 2


def test_partitioning_is_stable_across_processes_and_hash_seeds() -> None:
    keys = ["apple", "b", "", "é", 7, -1, b"\x00", ("t", 1)]
    here = [stable_partition(k, 13) for k in keys]
    script = ("from synod.mapreduce import stable_partition;"
              f"print([stable_partition(k, 13) for k in {keys!r}])")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                             env={"PYTHONHASHSEED": seed, "PATH": ""}, check=True).stdout
        assert out.strip() == str(here)
    assert stable_partition("apple", 1 << 32) == zlib.crc32(b"apple")
    assert stable_partition(7, 1 << 32) == zlib.crc32(msgpack.packb(7))


def test_external_merge_with_small_fan_in(tmp_path: Path) -> None:
    import random

    rng = random.Random(3)
    segments = []
    everything = []
    for i in range(9):
        pairs = sorted((rng.randint(0, 50), i) for _ in range(rng.randint(0, 30)))
        everything.extend(pairs)
        path = tmp_path / f"run{i}"
        with path.open("wb") as handle:
            length = write_pairs(handle, pairs, 4)
        segments.append((str(path), 0, length))
    merged = list(merge_segments(segments, fan_in=2, chunk_records=4, scratch_prefix=str(tmp_path / "m")))
    assert [k for k, _ in merged] == sorted(k for k, _ in everything)
    assert sorted(merged) == sorted(everything)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"run{i}" for i in range(9)]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=10**6), reducers=st.integers(min_value=1, max_value=5))
def test_tiny_budgets_give_the_same_output_as_a_counter(tmp_path: Path, seed: int, reducers: int) -> None:
    lines = data.zipf_lines(seed, 300)
    source = data.write_lines(tmp_path / f"in-{seed}-{reducers}.txt", lines)
    output = tmp_path / f"out-{seed}-{reducers}"
    result = run_job(CountWords, [source], output, runner="inline", reducers=reducers,
                     config=MapReduceConfig.sim())
    parts = data.read_parts(output)
    assert sorted(line for part in parts for line in part) == data.word_count_reference(lines)
    for part in parts:
        keys = [line.split("\t")[0] for line in part]
        assert keys == sorted(keys)
    assert result.counters[("test", "keys")] == sum(len(p) for p in parts)


def test_inline_and_local_runners_agree(tmp_path: Path) -> None:
    lines = data.zipf_lines(21, 5000)
    source = data.write_lines(tmp_path / "in.txt", lines)
    config = MapReduceConfig(split_bytes_min=8192)
    inline = run_job(CountWords, [source], tmp_path / "inline", runner="inline", reducers=3, config=config)
    local = run_job(CountWords, [source], tmp_path / "local", workers=2, reducers=3, config=config)
    assert data.read_parts(tmp_path / "inline") == data.read_parts(tmp_path / "local")
    assert inline.counters == local.counters
    assert inline.records_in == local.records_in == len(lines)
    assert local.steps[0].maps_total > 1


def test_directories_and_empty_files_as_input(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    data.write_lines(folder / "one.txt", ["a b"])
    data.write_lines(folder / "sub" / "two.txt", ["b c"])
    (folder / "empty.txt").write_text("")
    (folder / "_ignored").write_text("z z z\n")
    run_job(CountWords, [folder], tmp_path / "out", runner="inline")
    assert (tmp_path / "out" / "part-00000").read_text() == "a\t1\nb\t2\nc\t1\n"
    (folder / "one.txt").write_text("")
    (folder / "sub" / "two.txt").write_text("")
    run_job(CountWords, [folder], tmp_path / "out2", runner="inline")
    assert (tmp_path / "out2" / "part-00000").read_text() == ""


def test_bad_records_are_skipped_and_reported(tmp_path: Path) -> None:
    lines = ["good"] * 50 + ["BAD 1"] + ["good"] * 50 + ["BAD 2"] + ["good"] * 10
    source = data.write_lines(tmp_path / "in.txt", lines)
    result = run_job(CountRecords, [source], tmp_path / "out", workers=2, reducers=1)
    assert (tmp_path / "out" / "part-00000").read_text() == "records\t110\n"
    offsets = [sum(len(line) + 1 for line in lines[:i]) for i, line in enumerate(lines) if line.startswith("BAD")]
    assert [(s.path, s.offset) for s in result.skipped] == [(str(source), o) for o in offsets]
    assert result.counters == {("records", "good"): 110}


def test_msgpack_output_and_whole_file_input(tmp_path: Path) -> None:
    from synod.mapreduce import Job, MsgpackOutput

    class Sizes(Job):
        INPUT = WholeFiles(encoding=None)
        OUTPUT = MsgpackOutput()

        def mapper(self, path: str, content: bytes):  # type: ignore[no-untyped-def]
            yield Path(path).name, (len(content), content[:2])

    for name, body in (("x", b"hello"), ("y", b"\x00\x01\x02")):
        (tmp_path / name).write_bytes(body)
    run_job(Sizes, [tmp_path / "x", tmp_path / "y"], tmp_path / "out", runner="inline")
    pairs = []
    with (tmp_path / "out" / "part-00000").open("rb") as handle:
        for chunk in msgpack.Unpacker(handle, raw=False, use_list=False):
            pairs.extend(chunk)
    assert pairs == [("x", (5, b"he")), ("y", (3, b"\x00\x01"))]
    assert Counter(p.name for p in (tmp_path / "out").iterdir()) == Counter(["_SUCCESS", "part-00000"])


def test_reduce_with_folds_like_a_reducer(tmp_path: Path) -> None:
    from tests.mapreduce.jobs import FoldWords

    lines = data.zipf_lines(31, 2000)
    source = data.write_lines(tmp_path / "in.txt", lines)
    for name, config in (("memory", MapReduceConfig()), ("tiny", MapReduceConfig.sim())):
        run_job(FoldWords, [source], tmp_path / name, runner="inline", reducers=3, config=config)
        parts = data.read_parts(tmp_path / name)
        assert sorted(line for part in parts for line in part) == data.word_count_reference(lines)
        for part in parts:
            keys = [line.split("\t")[0] for line in part]
            assert keys == sorted(keys)


def test_reduce_with_and_a_reducer_is_refused(tmp_path: Path) -> None:

    from synod.mapreduce import JobLoadError
    from tests.mapreduce.jobs import FoldAndReducer

    source = data.write_lines(tmp_path / "in.txt", ["a"])
    with pytest.raises(JobLoadError, match="reduce_with has no combiner or reducer"):
        run_job(FoldAndReducer, [source], tmp_path / "out", runner="inline")


@pytest.mark.parametrize("values", ["ints", "none"])
def test_a_corrupt_run_frame_is_detected(tmp_path: Path, values: str) -> None:
    pairs = [(f"k{i:04d}", None if values == "none" else i) for i in range(100)]
    path = tmp_path / "run"
    with open(path, "wb") as handle:
        length = write_pairs(handle, pairs, 16)
    assert list(iter_pairs(str(path), 0, length)) == pairs
    clean = path.read_bytes()
    # A flipped bit anywhere -- a payload byte, the keys-only flag in the first
    # header, the length -- is caught, never decoded into other pairs.
    for position, mask in ((len(clean) // 2, 0x01), (3, 0x80), (0, 0x02)):
        damaged = bytearray(clean)
        damaged[position] ^= mask
        path.write_bytes(bytes(damaged))
        with pytest.raises((CorruptRun, OSError)):
            list(iter_pairs(str(path), 0, length))


class _NoneValues(Job):
    """(word, None) pairs -- keys-only frames -- into a reducer that counts them."""

    def mapper(self, key: None, line: str) -> Iterator[tuple[str, None]]:
        for word in line.split():
            yield word, None

    def reducer(self, word: str, values: Iterator[None]) -> Iterator[tuple[str, int]]:
        yield word, sum(1 for _ in values)


class _MixedValues(Job):
    """Some pairs with None values, some with ints, through the identity reducer."""

    def mapper(self, key: None, line: str) -> Iterator[tuple[str, int | None]]:
        for word in line.split():
            yield word, (None if word < "m" else len(word))


@pytest.mark.parametrize("config", [MapReduceConfig(fsync_output=False), MapReduceConfig.sim()],
                         ids=["memory", "tiny"])
def test_keys_only_records_through_a_reducer_and_mixed_with_pairs(tmp_path: Path, config: MapReduceConfig) -> None:
    lines = data.zipf_lines(5, 800)
    source = data.write_lines(tmp_path / "in.txt", lines)
    words = [word for line in lines for word in line.split()]
    run_job(_NoneValues, [source], tmp_path / "distinct", runner="inline", reducers=2, config=config)
    counts = sorted(line for part in data.read_parts(tmp_path / "distinct") for line in part)
    assert counts == sorted(f"{w}\t{n}" for w, n in Counter(words).items())
    run_job(_MixedValues, [source], tmp_path / "mixed", runner="inline", reducers=2, config=config)
    parts = data.read_parts(tmp_path / "mixed")
    expected = sorted(w if w < "m" else f"{w}\t{len(w)}" for w in words)
    assert sorted(line for part in parts for line in part) == expected
    for part in parts:
        keys = [line.split("\t")[0] for line in part]
        assert keys == sorted(keys)


class _WordKeys(Job):
    """Every word as a key with a None value, returned as ``Keys`` a block at a
    time; ``mapper_final`` adds pairs with values to the same buckets."""

    def mapper_block(self, block: RecordBlock) -> Keys:
        return Keys(word for line in block.values for word in line.split())

    def mapper_final(self) -> Iterator[tuple[str, int]]:
        yield "and", 1
        yield "zzz", 2


class _WordKeysCounted(_WordKeys):
    """``Keys`` through a combiner (which needs pairs) and a counting reducer."""

    def combiner(self, word: str, values: Iterator[int | None]) -> Iterator[tuple[str, int]]:
        yield word, sum(1 if value is None else value for value in values)

    def reducer(self, word: str, values: Iterator[int | None]) -> Iterator[tuple[str, int]]:
        yield word, sum(1 if value is None else value for value in values)


@pytest.mark.parametrize("reducers", [1, 3])
@pytest.mark.parametrize("config", [MapReduceConfig(fsync_output=False), MapReduceConfig.sim()],
                         ids=["memory", "tiny"])
def test_keys_from_mapper_block_equal_the_pairs_they_stand_for(tmp_path: Path, config: MapReduceConfig,
                                                               reducers: int) -> None:
    lines = data.zipf_lines(6, 600)
    source = data.write_lines(tmp_path / "in.txt", lines)
    words = [word for line in lines for word in line.split()]
    result = run_job(_WordKeys, [source], tmp_path / "keys", runner="inline", workers=2,
                     reducers=reducers, config=config)
    maps = result.steps[0].maps_total
    parts = data.read_parts(tmp_path / "keys")
    expected = words + ["and\t1", "zzz\t2"] * maps
    assert sorted(line for part in parts for line in part) == sorted(expected)
    for part in parts:
        keys = [line.split("\t")[0] for line in part]
        assert keys == sorted(keys)
    run_job(_WordKeysCounted, [source], tmp_path / "counted", runner="inline", workers=2,
            reducers=reducers, config=config)
    counts = Counter(words) + Counter({"and": maps, "zzz": 2 * maps})
    got = [line for part in data.read_parts(tmp_path / "counted") for line in part]
    assert sorted(got) == sorted(f"{w}\t{n}" for w, n in counts.items())


def test_keys_iterate_as_none_valued_pairs() -> None:
    keys = Keys(iter([b"b", b"a"]))
    assert list(keys) == [(b"b", None), (b"a", None)] and len(keys) == 2
