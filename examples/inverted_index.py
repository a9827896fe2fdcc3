"""Inverted index: for each word, the sorted list of documents that contain it.

Input: one document per line, ``doc_id<TAB>text``. Output: ``word<TAB>["d1", ...]``.

    synod mr run examples/inverted_index.py docs.tsv -o index

The mapper collects postings in memory for its whole split (in-mapper combining)
and emits one (word, doc ids) pair per distinct word; the combiner and reducer
merge posting lists. Each document is read by exactly one map task, so a map
task's list holds a document once and needs no sorting: the reducer sorts each
word's merged list once (and drops duplicate ids, should the input repeat one).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from synod.mapreduce import Job


def _merge(lists: Iterable[Iterable[str]]) -> list[str]:
    return sorted(set(itertools.chain.from_iterable(lists)))


class InvertedIndex(Job):
    def mapper_init(self) -> None:
        self.postings: dict[str, list[str]] = {}

    def mapper(self, key: None, line: str) -> None:
        doc, _, text = line.partition("\t")
        postings = self.postings
        for word in set(text.split()):
            docs = postings.get(word)
            if docs is None:
                postings[word] = [doc]
            else:
                docs.append(doc)

    def mapper_final(self) -> Iterable[tuple[str, list[str]]]:
        # The pairs as a view: the framework takes them in batches at C speed.
        return self.postings.items()

    def combiner(self, word: str, lists: Iterator[list[str]]) -> Iterator[tuple[str, list[str]]]:
        yield word, _merge(lists)

    def reducer(self, word: str, lists: Iterator[list[str]]) -> Iterator[tuple[str, list[str]]]:
        docs = _merge(lists)
        self.increment_counter("index", "postings", len(docs))
        yield word, docs
