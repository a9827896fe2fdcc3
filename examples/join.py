"""A reduce-side equi-join of users and orders on the user id.

Inputs: ``users*.csv`` lines ``user_id,name`` and ``orders*.csv`` lines
``order_id,user_id,amount``; the mapper tells them apart by file name.
Output: ``user_id<TAB>[order_id, name, amount]`` for every order whose user
exists (an inner join), sorted by user id within each part.

    synod mr run examples/join.py users.csv orders.csv -o joined
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from synod.mapreduce import Job


class Join(Job):
    def mapper(self, key: None, line: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
        fields = line.split(",")
        if os.path.basename(self.input_path).startswith("users"):
            user_id, name = fields
            yield user_id, ("U", name)
        else:
            order_id, user_id, amount = fields
            yield user_id, ("O", order_id, int(amount))

    def reducer(self, user_id: str, rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[str, list[Any]]]:
        names: list[str] = []
        orders: list[tuple[str, int]] = []
        for row in rows:
            if row[0] == "U":
                names.append(row[1])
            else:
                orders.append((row[1], row[2]))
        for name in names:
            for order_id, amount in sorted(orders):
                self.increment_counter("join", "rows")
                yield user_id, [order_id, name, amount]
