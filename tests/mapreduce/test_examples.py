"""Every example job against a single-process reference on generated data, with
the local runner (worker processes) and with budgets small enough to force
spills and external merges."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.mapreduce import MapReduceConfig, load_job, run_job
from tests.mapreduce import data

TINY = MapReduceConfig.sim()


def run(example: str, inputs: list[Path], output: Path, **kwargs: object) -> list[list[str]]:
    job = load_job(data.EXAMPLES / example)
    result = run_job(job, inputs, output, **kwargs)  # type: ignore[arg-type]
    assert (output / "_SUCCESS").exists()
    assert not (output / "_temporary").exists()
    parts = data.read_parts(output)
    assert len(parts) == len(result.parts)
    return parts


def assert_sorted_parts(parts: list[list[str]]) -> None:
    for lines in parts:
        keys = [line.split("\t")[0] for line in lines]
        assert keys == sorted(keys)


@pytest.mark.parametrize("runner,config", [("local", None), ("inline", TINY)], ids=["local", "inline-tiny"])
def test_word_count_matches_counter(tmp_path: Path, runner: str, config: MapReduceConfig | None) -> None:
    lines = data.zipf_lines(1, 3000)
    source = data.write_lines(tmp_path / "corpus.txt", lines)
    parts = run("word_count.py", [source], tmp_path / "out", runner=runner, workers=2, reducers=3,
                config=config)
    assert_sorted_parts(parts)
    assert sorted(line for part in parts for line in part) == data.word_count_reference(lines)


def test_inverted_index_matches_reference(tmp_path: Path) -> None:
    docs = data.documents(2, 800)
    source = data.write_lines(tmp_path / "docs.tsv", docs)
    parts = run("inverted_index.py", [source], tmp_path / "out", workers=2, reducers=2, config=TINY)
    assert_sorted_parts(parts)
    assert sorted(line for part in parts for line in part) == data.inverted_index_reference(docs)


@pytest.mark.parametrize("reducers", [1, 4])
def test_terasort_output_is_globally_sorted(tmp_path: Path, reducers: int) -> None:
    lines = data.records(3, 5000)
    source = data.write_lines(tmp_path / "records.txt", lines)
    parts = run("terasort.py", [source], tmp_path / "out", workers=2, reducers=reducers)
    together = [line for part in parts for line in part]
    assert together == sorted(lines)
    if reducers > 1:
        # The sampled range partitioner spreads the records over every reducer.
        assert all(len(part) > len(lines) / reducers / 3 for part in parts)


def test_terasort_with_spills(tmp_path: Path) -> None:
    lines = data.records(4, 2000)
    source = data.write_lines(tmp_path / "records.txt", lines)
    parts = run("terasort.py", [source], tmp_path / "out", workers=2, reducers=3, config=TINY)
    assert [line for part in parts for line in part] == sorted(lines)


def test_join_matches_reference(tmp_path: Path) -> None:
    users, orders = data.users_and_orders(5, 300, 3000)
    inputs = [data.write_lines(tmp_path / "users.csv", users),
              data.write_lines(tmp_path / "orders.csv", orders)]
    parts = run("join.py", inputs, tmp_path / "out", workers=2, reducers=3)
    assert_sorted_parts(parts)
    assert sorted(line for part in parts for line in part) == data.join_reference(users, orders)


def test_two_step_job(tmp_path: Path) -> None:
    lines = data.zipf_lines(6, 2000)
    source = data.write_lines(tmp_path / "corpus.txt", lines)
    parts = run("two_step_top_words.py", [source], tmp_path / "out", workers=2, reducers=2)
    counts: dict[str, int] = {}
    for line in lines:
        for word in line.split():
            counts[word] = counts.get(word, 0) + 1
    # Per length: the highest count, ties to the alphabetically first word.
    best: dict[int, tuple[int, str]] = {}
    for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        best.setdefault(len(word), (count, word))
    expected = sorted(f"{length}\t{word} {count}" for length, (count, word) in best.items())
    assert sorted(line for part in parts for line in part) == expected
