"""Word count: the paper's first example, with in-mapper combining.

    synod mr run examples/word_count.py corpus.txt -o counts

Each map task counts the words of its split in a ``Counter`` (``mapper_init`` /
``mapper_final``: one pair per distinct word leaves the task instead of one per
word). ``mapper_block`` receives about 1 MB of lines per call, so the counting is
done by ``Counter``'s C code rather than one Python call per line; the per-line
form, ``def mapper(self, key, line): self.counts.update(line.split())``, gives
the same output a little more slowly. ``REDUCE_WITH = operator.add`` makes the
combiner and the reducer a sum of each word's counts, done in bulk; the
classic form is

    def reducer(self, word, counts):
        yield word, sum(counts)

Output lines: ``word<TAB>count``, sorted by word in each part.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable

from synod.mapreduce import Job, RecordBlock


class WordCount(Job):
    REDUCE_WITH = operator.add

    def mapper_init(self) -> None:
        self.counts: Counter[str] = Counter()

    def mapper_block(self, block: RecordBlock) -> None:
        self.counts.update("\n".join(block.values).split())

    def mapper_final(self) -> Iterable[tuple[str, int]]:
        self.increment_counter("words", "distinct_in_maps", len(self.counts))
        # The pairs as a view, not a generator: the framework takes them in
        # batches at C speed instead of resuming a Python frame per word.
        return self.counts.items()
