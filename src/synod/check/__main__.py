"""Replay a saved history through a checker.

    python -m synod.check linearizability HISTORY.jsonl [--steps-max N]
    python -m synod.check serializability HISTORY.jsonl [--realtime]

Prints the checker's report and exits 0 when the history passes, 1 when a
violation was found or the check was inconclusive, 2 when the file is not a
history. This module is the checkers' only I/O: it reads the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synod.check.history import History, HistoryError
from synod.check.linearizability import STEPS_MAX_DEFAULT, check_linearizability
from synod.check.serializability import check_serializability


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synod.check", description=__doc__)
    parser.add_argument("checker", choices=["linearizability", "serializability"])
    parser.add_argument("history", type=Path, help="a history saved with History.to_jsonl()")
    parser.add_argument("--steps-max", type=int, default=STEPS_MAX_DEFAULT)
    parser.add_argument("--realtime", action="store_true", help="strict serializability")
    args = parser.parse_args(argv)
    try:
        with args.history.open(encoding="utf-8") as stream:
            history = History.read_jsonl(stream)
        if args.checker == "linearizability":
            result = check_linearizability(history, steps_max=args.steps_max)
        else:
            result = check_serializability(history, realtime=args.realtime)
    except (OSError, HistoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.report())
    statistics = ", ".join(f"{key}={value}" for key, value in result.statistics.items())
    print(f"({len(history)} operations; {statistics})")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
