"""A two-step job: count words, then find the most frequent word of each length.

Shows ``steps()``: step 1 is a word count; step 2 re-keys each (word, count) by
word length and keeps the top word per length.
"""

from __future__ import annotations

from collections.abc import Iterator

from synod.mapreduce import Job, Step


class TopWordPerLength(Job):
    def steps(self) -> list[Step]:
        return [
            Step(mapper=self.split_words, combiner=self.total, reducer=self.total),
            Step(mapper=self.by_length, reducer=self.top),
        ]

    def split_words(self, key: None, line: str) -> Iterator[tuple[str, int]]:
        for word in line.split():
            yield word, 1

    def total(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)

    def by_length(self, word: str, count: int) -> Iterator[tuple[int, tuple[int, str]]]:
        yield len(word), (count, word)

    def top(self, length: int, pairs: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        count, word = max(pairs, key=lambda pair: (pair[0], [-ord(c) for c in pair[1]]))
        yield length, f"{word} {count}"
