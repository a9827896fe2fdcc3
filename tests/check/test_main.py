"""``python -m synod.check`` replays a saved history."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.check.__main__ import main

from .helpers import history


def test_replays_a_saved_linearizability_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        history(
            ("a", ("put", "x", 1), 0, 1, "ok"),
            ("b", ("get", "x"), 2, 3, "ok", None),
        ).to_jsonl()
    )
    assert main(["linearizability", str(path)]) == 1
    assert "not linearizable" in capsys.readouterr().out


def test_replays_a_serializable_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.jsonl"
    path.write_text(
        history(
            ("a", ("txn", (("append", "x", 1),)), 0, 1, "ok", (("append", "x", 1),)),
            ("b", ("txn", (("r", "x", None),)), 2, 3, "ok", (("r", "x", (1,)),)),
        ).to_jsonl()
    )
    assert main(["serializability", str(path), "--realtime"]) == 0
    assert "serializability: ok" in capsys.readouterr().out


def test_a_file_that_is_not_a_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_text("hello\n")
    assert main(["linearizability", str(path)]) == 2
    assert main(["linearizability", str(tmp_path / "missing.jsonl")]) == 2
    assert "error:" in capsys.readouterr().err
