"""Bad input (issue 7's last section): each gives one clear message naming the
task, file and record offset, and leaves no partial output behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from synod.mapreduce import (
    InputError,
    JobFailed,
    JobLoadError,
    OutputExistsError,
    load_job,
    run_job,
)
from tests.mapreduce import data
from tests.mapreduce.jobs import CountWords, RaisingReducer, SetKey, StrictCountRecords


def test_job_file_with_a_syntax_error(tmp_path: Path) -> None:
    job_file = tmp_path / "broken.py"
    job_file.write_text("from synod.mapreduce import Job\nclass J(Job)\n    pass\n")
    with pytest.raises(JobLoadError, match=r"broken.py does not import \(line 2\)"):
        load_job(job_file)


def test_job_file_that_raises_on_import(tmp_path: Path) -> None:
    job_file = tmp_path / "missing_dep.py"
    job_file.write_text("import no_such_module_here\n")
    with pytest.raises(JobLoadError, match="does not import: ModuleNotFoundError"):
        load_job(job_file)


def test_job_file_without_a_job(tmp_path: Path) -> None:
    job_file = tmp_path / "empty.py"
    job_file.write_text("x = 1\n")
    with pytest.raises(JobLoadError, match="defines no subclass"):
        load_job(job_file)
    with pytest.raises(JobLoadError, match="does not exist"):
        load_job(tmp_path / "nope.py")


def test_mapper_that_raises_names_task_file_and_offset(tmp_path: Path) -> None:
    lines = ["ok one", "ok two", "BAD three", "ok four"]
    source = data.write_lines(tmp_path / "in.txt", lines)
    output = tmp_path / "out"
    with pytest.raises(JobFailed) as caught:
        run_job(StrictCountRecords, [source], output, runner="inline")
    message = str(caught.value)
    offset = len("ok one\nok two\n")
    assert "map task 0" in message
    assert f"{source} at byte offset {offset}" in message
    assert "ValueError: cannot parse 'BAD three'" in message
    assert caught.value.failure is not None and "Traceback" in caught.value.failure.detail
    assert not output.exists()


def test_reducer_that_raises_names_the_key(tmp_path: Path) -> None:
    source = data.write_lines(tmp_path / "in.txt", ["a boom b"])
    with pytest.raises(JobFailed, match=r"reduce task 0 .*reducer raised on key 'boom': RuntimeError"):
        run_job(RaisingReducer, [source], tmp_path / "out", workers=2, reducers=1)
    assert not (tmp_path / "out").exists()


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"input path {tmp_path / 'nope.txt'} does not exist"):
        run_job(CountWords, [tmp_path / "nope.txt"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_input(tmp_path: Path) -> None:
    source = data.write_lines(tmp_path / "secret.txt", ["x"])
    source.chmod(0)
    with pytest.raises(InputError, match=r"secret\.txt is not readable"):
        run_job(CountWords, [source], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_undecodable_input_names_the_offset(tmp_path: Path) -> None:
    source = tmp_path / "latin1.txt"
    source.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(JobFailed, match=r"latin1.txt at byte offset 8: input cannot be decoded"):
        run_job(CountWords, [source], tmp_path / "out", runner="inline")


def test_existing_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    source = data.write_lines(tmp_path / "in.txt", ["a b a"])
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists"):
        run_job(CountWords, [source], output, runner="inline")
    assert (output / "keep.txt").read_text() == "mine"
    run_job(CountWords, [source], output, runner="inline", overwrite=True)
    assert sorted(p.name for p in output.iterdir()) == ["_SUCCESS", "part-00000"]
    assert (output / "part-00000").read_text() == "a\t2\nb\t1\n"


def test_unserializable_key_names_task_file_and_offset(tmp_path: Path) -> None:
    source = data.write_lines(tmp_path / "in.txt", ["fine", "set", "fine"])
    output = tmp_path / "out"
    with pytest.raises(JobFailed) as caught:
        run_job(SetKey, [source], output, workers=2, reducers=1)
    message = str(caught.value)
    assert "map task 0" in message and f"{source} at byte offset 5" in message
    assert "key {'set'} cannot be serialized with msgpack" in message
    assert not output.exists()


def test_block_mapper_failure_names_the_block(tmp_path: Path) -> None:
    from tests.mapreduce.jobs import BlockMapperFails

    source = data.write_lines(tmp_path / "in.txt", ["a", "poison", "b"])
    with pytest.raises(JobFailed, match=r"in\.txt at byte offset 0: mapper_block raised on the block of 3"):
        run_job(BlockMapperFails, [source], tmp_path / "out", runner="inline")


def test_partitioner_out_of_range(tmp_path: Path) -> None:
    from tests.mapreduce.jobs import BadPartitioner

    source = data.write_lines(tmp_path / "in.txt", ["a b"])
    with pytest.raises(JobFailed, match=r"partitioner put key 'a' in bucket 2, not in \[0, 2\)"):
        run_job(BadPartitioner, [source], tmp_path / "out", runner="inline", reducers=2)


def test_block_partitioner_with_too_few_buckets(tmp_path: Path) -> None:
    from tests.mapreduce.jobs import ShortBlockPartitioner

    source = data.write_lines(tmp_path / "in.txt", ["a b"])
    with pytest.raises(JobFailed, match=r"partitioner_block gave 1 buckets for 2 keys"):
        run_job(ShortBlockPartitioner, [source], tmp_path / "out", runner="inline", reducers=2)


def test_mapper_output_that_is_not_a_pair(tmp_path: Path) -> None:
    from synod.mapreduce import Job

    class Strings(Job):
        def mapper(self, key: None, line: str):  # type: ignore[no-untyped-def]
            yield line  # "ab" is two characters, not a (key, value) pair

    source = data.write_lines(tmp_path / "in.txt", ["ab"])
    with pytest.raises(JobFailed, match=r"in\.txt at byte offset 0: mapper raised: TypeError: mapper output 'ab' is not a \(key, value\) pair"):
        run_job(Strings, [source], tmp_path / "out", runner="inline")
