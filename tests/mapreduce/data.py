"""Generated inputs and single-process references for the example jobs."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

_LETTERS = "abcdefghijklmnopqrstuvwxyzéß"


def vocabulary(rng: random.Random, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 9))))
    return sorted(words)


def zipf_lines(seed: int, lines: int, words_per_line: int = 8, vocabulary_size: int = 500) -> list[str]:
    rng = random.Random(seed)
    words = vocabulary(rng, vocabulary_size)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    out = []
    for _ in range(lines):
        count = rng.randint(0, words_per_line * 2)
        out.append(" ".join(rng.choices(words, weights, k=count)))
    return out


def write_lines(path: Path, lines: list[str], *, final_newline: bool = True) -> Path:
    text = "\n".join(lines) + ("\n" if final_newline else "")
    path.write_text(text, encoding="utf-8")
    return path


def read_parts(output: Path) -> list[list[str]]:
    """Lines of each part file, in part order."""
    return [p.read_text(encoding="utf-8").splitlines() for p in sorted(output.glob("part-*"))]


def word_count_reference(lines: list[str]) -> list[str]:
    counts = Counter(word for line in lines for word in line.split())
    return sorted(f"{word}\t{count}" for word, count in counts.items())


def documents(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    words = vocabulary(rng, 300)
    return [f"d{i:05d}\t" + " ".join(rng.choices(words, k=rng.randint(1, 30))) for i in range(count)]


def inverted_index_reference(docs: list[str]) -> list[str]:
    index: dict[str, set[str]] = {}
    for line in docs:
        doc, _, text = line.partition("\t")
        for word in text.split():
            index.setdefault(word, set()).add(doc)
    return sorted(f"{w}\t{json.dumps(sorted(d), ensure_ascii=False)}" for w, d in index.items())


def records(seed: int, count: int) -> list[str]:
    """TeraSort-style records: a 10-character key, then filler, 100 bytes with the newline."""
    rng = random.Random(seed)
    printable = [chr(c) for c in range(33, 127)]
    out = []
    for i in range(count):
        key = "".join(rng.choice(printable) for _ in range(10))
        out.append(f"{key}{i:010d}" + "x" * 79)
    return out


def users_and_orders(seed: int, users: int, orders: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    user_lines = [f"u{i},name{i}" for i in range(users)]
    order_lines = [f"o{i},u{rng.randrange(users + users // 5)},{rng.randint(1, 500)}" for i in range(orders)]
    return user_lines, order_lines


def join_reference(user_lines: list[str], order_lines: list[str]) -> list[str]:
    names: dict[str, list[str]] = {}
    for line in user_lines:
        user_id, name = line.split(",")
        names.setdefault(user_id, []).append(name)
    out = []
    for line in order_lines:
        order_id, user_id, amount = line.split(",")
        for name in names.get(user_id, []):
            out.append(f"{user_id}\t{json.dumps([order_id, name, int(amount)])}")
    return sorted(out)
