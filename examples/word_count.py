"""Word count: the paper's first example, with in-mapper combining.

    synod mr run examples/word_count.py corpus.txt -o counts

Each map task counts the words of its split in a ``Counter`` (``mapper_init`` /
``mapper_final``: one pair per distinct word leaves the task instead of one per
word), the combiner would merge counts across spills, and the reducer sums.
Output lines: ``word<TAB>count``, sorted by word within each part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from synod.mapreduce import Job


class WordCount(Job):
    def mapper_init(self) -> None:
        self.counts: Counter[str] = Counter()

    def mapper(self, key: None, line: str) -> None:
        self.counts.update(line.split())

    def mapper_final(self) -> Iterator[tuple[str, int]]:
        self.increment_counter("words", "distinct_in_maps", len(self.counts))
        yield from self.counts.items()

    def combiner(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)

    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)
