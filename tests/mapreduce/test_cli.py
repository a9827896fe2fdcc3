"""``synod mr run``: a summary with counters on success; one clear message and
exit status 1 on bad input, with no output left behind."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from synod.cli.mapreduce import mr
from tests.mapreduce import data

WORD_COUNT = str(data.EXAMPLES / "word_count.py")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(mr, ["run", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_run_word_count_prints_a_summary(tmp_path: Path) -> None:
    lines = data.zipf_lines(8, 500)
    source = data.write_lines(tmp_path / "in.txt", lines)
    code, output = invoke(WORD_COUNT, str(source), "-o", str(tmp_path / "out"), "--workers", "2",
                          "--reducers", "2")
    assert code == 0, output
    assert "done in" in output and f"{len(lines):,} records" in output
    assert "distinct_in_maps" in output
    parts = data.read_parts(tmp_path / "out")
    assert sorted(line for part in parts for line in part) == data.word_count_reference(lines)


def test_inline_runner_and_config_override(tmp_path: Path) -> None:
    source = data.write_lines(tmp_path / "in.txt", ["b a", "a"])
    code, output = invoke(WORD_COUNT, str(source), "-o", str(tmp_path / "out"), "--runner", "inline",
                          "--set", "map_buffer_bytes_max=1024")
    assert code == 0, output
    assert (tmp_path / "out" / "part-00000").read_text() == "a\t2\nb\t1\n"


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    source = data.write_lines(tmp_path / "in.txt", ["x"])
    (tmp_path / "out").mkdir()
    code, output = invoke(WORD_COUNT, str(source), "-o", str(tmp_path / "out"))
    assert code == 1 and "already exists (use --overwrite)" in output
    code, output = invoke(WORD_COUNT, str(source), "-o", str(tmp_path / "out"), "--overwrite")
    assert code == 0, output


def test_bad_job_file_and_missing_input(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text("raise RuntimeError('configuration missing')\n")
    source = data.write_lines(tmp_path / "in.txt", ["x"])
    code, output = invoke(str(job), str(source), "-o", str(tmp_path / "out"))
    assert code == 1 and "does not import: RuntimeError: configuration missing" in output
    code, output = invoke(WORD_COUNT, str(tmp_path / "missing.txt"), "-o", str(tmp_path / "out"))
    assert code == 1 and "does not exist" in output
    assert not (tmp_path / "out").exists()


def test_failing_mapper_names_task_file_and_offset(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(
        "from synod.mapreduce import Job\n"
        "class Parse(Job):\n"
        "    def mapper(self, key, line):\n"
        "        yield line, int(line)\n"
    )
    source = data.write_lines(tmp_path / "numbers.txt", ["1", "2", "three", "4"])
    code, output = invoke(str(job), str(source), "-o", str(tmp_path / "out"), "--workers", "2")
    assert code == 1
    flat = " ".join(output.split())
    assert "map task 0" in flat and "numbers.txt at byte offset 4" in flat
    assert "invalid literal for int()" in flat and "no output was left behind" in flat
    assert not (tmp_path / "out").exists()


def test_unknown_config_field(tmp_path: Path) -> None:
    source = data.write_lines(tmp_path / "in.txt", ["x"])
    code, output = invoke(WORD_COUNT, str(source), "-o", str(tmp_path / "out"), "--set", "nope=1")
    assert code == 1 and "unknown config field 'nope'" in output


def test_config_file(tmp_path: Path) -> None:
    source = data.write_lines(tmp_path / "in.txt", ["b a", "a"])
    config = tmp_path / "synod.toml"
    config.write_text("[mapreduce]\nreducers = 3\nfsync_output = false\n")
    code, output = invoke(WORD_COUNT, str(source), "-o", str(tmp_path / "out"), "--runner", "inline",
                          "--config", str(config))
    assert code == 0, output
    assert len(list((tmp_path / "out").glob("part-*"))) == 3
    config.write_text("[mapreduce]\nreducers = -1\n")
    code, output = invoke(WORD_COUNT, str(source), "-o", str(tmp_path / "out2"), "--config", str(config))
    assert code == 1 and "reducers must be >= 0" in output


def test_progress_view_renders_tasks_and_rates() -> None:
    import io

    from rich.console import Console

    from synod.cli.mapreduce import _ProgressView
    from synod.mapreduce import JobProgress

    buffer = io.StringIO()
    view = _ProgressView(Console(file=buffer, force_terminal=True, width=120))
    with view.progress:
        for done in range(3):
            view(JobProgress(step=0, steps=1, maps_total=2, maps_completed=min(done, 2), reduces_total=1,
                             reduces_completed=1 if done == 2 else 0, records_in=1000 * done,
                             bytes_in=10**6 * done, input_bytes_total=2 * 10**6, elapsed_s=1.0 + done,
                             workers_alive=2))
    text = buffer.getvalue()
    assert "map" in text and "reduce" in text and "rec/s" in text and "MB/s" in text
    assert "2/2" in text
