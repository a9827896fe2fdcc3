"""The shard map file the lock service keeps: round trip and refusals of bad files."""

from __future__ import annotations

import json

import pytest

from synod.core.errors import ConfigError
from synod.txn.shardmap import (
    SHARD_MAP_BYTES_MAX,
    shard_map_from_bytes,
    shard_map_path,
    shard_map_to_bytes,
    uniform_map,
)


def test_a_map_survives_the_file_format() -> None:
    shard_map = uniform_map(4, 3, version=7)
    assert shard_map_from_bytes(shard_map_to_bytes(shard_map)) == shard_map
    assert shard_map_path("local") == "/ls/local/txn/shardmap"


@pytest.mark.parametrize("contents", [
    b"", b"not json", b"[]", b'{"version": 1}',
    json.dumps({"version": 0, "shards": [{"group": "s1", "start": "", "end": "", "replicas": ["n1"]}]}).encode(),
    json.dumps({"version": True, "shards": [{"group": "s1", "start": "", "end": "", "replicas": ["n1"]}]}).encode(),
    json.dumps({"version": 1, "shards": [{"group": "s1", "start": "", "end": "", "replicas": []}]}).encode(),
    json.dumps({"version": 1, "shards": [{"group": 5, "start": "", "end": "", "replicas": ["n1"]}]}).encode(),
    # ranges that leave a gap, and ranges that do not reach the end
    json.dumps({"version": 1, "shards": [{"group": "s1", "start": "", "end": "m", "replicas": ["n1"]},
                                         {"group": "s2", "start": "n", "end": "", "replicas": ["n2"]}]}).encode(),
    json.dumps({"version": 1, "shards": [{"group": "s1", "start": "", "end": "m", "replicas": ["n1"]}]}).encode(),
    b" " * (SHARD_MAP_BYTES_MAX + 1),
])
def test_a_bad_map_file_is_refused_with_a_config_error(contents: bytes) -> None:
    with pytest.raises(ConfigError):
        shard_map_from_bytes(contents)
