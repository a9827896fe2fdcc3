"""Inverted index: for each word, the sorted list of documents that contain it.

Input: one document per line, ``doc_id<TAB>text``. Output: ``word<TAB>["d1", ...]``.

    synod mr run examples/inverted_index.py docs.tsv -o index

The mapper collects postings in memory for its whole split (in-mapper combining)
and emits one (word, doc ids) pair per distinct word; the combiner and reducer
merge posting lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from synod.mapreduce import Job


def _merge(lists: Iterable[Iterable[str]]) -> list[str]:
    merged: set[str] = set()
    for docs in lists:
        merged.update(docs)
    return sorted(merged)


class InvertedIndex(Job):
    def mapper_init(self) -> None:
        self.postings: dict[str, set[str]] = {}

    def mapper(self, key: None, line: str) -> None:
        doc, _, text = line.partition("\t")
        postings = self.postings
        for word in set(text.split()):
            docs = postings.get(word)
            if docs is None:
                postings[word] = {doc}
            else:
                docs.add(doc)

    def mapper_final(self) -> Iterator[tuple[str, list[str]]]:
        for word, docs in self.postings.items():
            yield word, sorted(docs)

    def combiner(self, word: str, lists: Iterator[list[str]]) -> Iterator[tuple[str, list[str]]]:
        yield word, _merge(lists)

    def reducer(self, word: str, lists: Iterator[list[str]]) -> Iterator[tuple[str, list[str]]]:
        docs = _merge(lists)
        self.increment_counter("index", "postings", len(docs))
        yield word, docs
