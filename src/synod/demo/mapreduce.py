"""Tour step for MapReduce: a word count over the text that ships with synod
(every module's theory-of-operation comment), on local worker processes,
checked against a single-process count."""

from __future__ import annotations

import importlib
import operator
import pkgutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import synod
from synod.demo.tour import Step, StepContext
from synod.mapreduce import Job, run_job


class DemoWordCount(Job):
    """Count words (lower-cased, punctuation stripped) with in-mapper combining."""

    REDUCE_WITH = operator.add

    def mapper_init(self) -> None:
        self.counts: Counter[str] = Counter()

    def mapper(self, key: object, line: str) -> Iterator[tuple[str, int]]:
        self.counts.update(_words(line))
        return iter(())

    def mapper_final(self) -> Iterator[tuple[str, int]]:
        yield from self.counts.items()


def _words(line: str) -> list[str]:
    cleaned = "".join(c.lower() if c.isalnum() else " " for c in line)
    return cleaned.split()


def _shipped_text(directory: Path) -> list[Path]:
    """Write every synod module's docstring to files, one per package."""
    by_package: dict[str, list[str]] = {}
    for info in pkgutil.walk_packages(synod.__path__, prefix="synod."):
        if info.name.endswith("__main__") or info.name.startswith("synod.cli"):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # a module that cannot load here is simply not part of the corpus
            continue
        if module.__doc__:
            by_package.setdefault(info.name.split(".")[1], []).append(module.__doc__)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for package, docs in sorted(by_package.items()):
        path = directory / f"{package}.txt"
        path.write_text("\n".join(docs) * 20)
        paths.append(path)
    return paths


def _mapreduce(context: StepContext) -> None:
    inputs = _shipped_text(context.workdir / "mr-input")
    size_kb = sum(p.stat().st_size for p in inputs) // 1024
    context.say(f"input: {len(inputs)} files, {size_kb} KiB of synod's own theory-of-operation comments")
    reference: Counter[str] = Counter()
    for path in inputs:
        for line in path.read_text().splitlines():
            reference.update(_words(line))
    result = run_job(DemoWordCount, inputs, context.workdir / "mr-output", runner="local", workers=2,
                     reducers=2, overwrite=True)
    counts: dict[str, int] = {}
    for part in result.parts:
        for line in part.read_text().splitlines():
            word, _, count = line.partition("\t")
            counts[word] = int(count)
    context.check("word count on 2 local worker processes equals a single-process count",
                  counts == dict(reference),
                  f"{len(counts)} distinct words in {len(result.parts)} parts, {result.elapsed_s:.2f} s")
    top = ", ".join(f"{w} {c}" for w, c in reference.most_common(5))
    context.say(f"most common: {top}")
    sorted_parts = all(
        (keys := [line.partition("\t")[0] for line in part.read_text().splitlines()]) == sorted(keys)
        for part in result.parts
    )
    context.check("keys are sorted within each part file (committed by rename)", sorted_parts)


STEPS = (
    Step(
        title="MapReduce: word count",
        explanation="""
A word count in the paper's model: the input is split into line-aligned byte
ranges, map tasks combine in memory and partition by a stable hash, reduce tasks
merge sorted runs and write each part file atomically. The local runner uses
worker processes; a worker that dies has its task re-executed.""",
        run=_mapreduce,
    ),
)
