"""NodeConfig: loading from TOML, and one error naming the field."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from synod.cli.node import node_main
from synod.core.errors import ConfigError
from synod.node.config import NodeConfig, load_node_config

GOOD = """
node_id = "n1"
data_dir = "{data}"
bind = "127.0.0.1:7101"
secret_file = "{secret}"
nodes = ["n1=127.0.0.1:7101", "n2=127.0.0.1:7102", "n3=127.0.0.1:7103"]
seeds = ["n2@127.0.0.1:7202"]
shards = 3
preset = "local"
"""


def write(tmp_path: Path, text: str) -> Path:
    secret = tmp_path / "cluster.key"
    secret.write_text("0123456789abcdef0123456789abcdef")
    path = tmp_path / "node.toml"
    path.write_text(text.format(data=tmp_path / "data", secret=secret))
    return path


def test_a_good_file_loads_with_defaults_for_the_rest(tmp_path: Path) -> None:
    config = load_node_config(write(tmp_path, GOOD))
    assert config.node_id == "n1"
    assert config.data_dir == tmp_path / "data"
    assert config.shards == 3
    assert config.insecure is False
    assert config.http_bind == "127.0.0.1:0"
    assert config.members() == {"n1": ("127.0.0.1", 7101), "n2": ("127.0.0.1", 7102), "n3": ("127.0.0.1", 7103)}


def test_overrides_replace_fields(tmp_path: Path) -> None:
    config = load_node_config(write(tmp_path, GOOD), {"shards": "1", "http_bind": ""})
    assert config.shards == 1
    assert config.http_bind == ""


@pytest.mark.parametrize(("change", "field"), [
    ('shards = "many"', "NodeConfig.shards"),
    ("shards = 40", "NodeConfig.shards"),
    ('bind = "localhost"', "NodeConfig.bind"),
    ('seeds = ["n2:127.0.0.1:1"]', "NodeConfig.seeds"),
    ('preset = "wan"', "NodeConfig.preset"),
    ('nodes = ["n2=127.0.0.1:7102"]', "NodeConfig.nodes"),
    ('colour = "blue"', "colour"),
    ('initial_members = ["n1", "n9"]', "NodeConfig.initial_members"),
    ('initial_members = ["n1", "n1"]', "NodeConfig.initial_members"),
])
def test_a_bad_field_is_named(tmp_path: Path, change: str, field: str) -> None:
    key = change.split(" = ")[0]
    lines = [line for line in GOOD.splitlines() if not line.startswith(f"{key} =")]
    with pytest.raises(ConfigError, match=re.escape(field)):
        load_node_config(write(tmp_path, "\n".join([*lines, change]) + "\n"))


def test_the_voters_are_the_initial_members_or_every_node(tmp_path: Path) -> None:
    assert load_node_config(write(tmp_path, GOOD)).voters() == ("n1", "n2", "n3")
    joining = load_node_config(write(tmp_path, GOOD), {"node_id": "n3", "initial_members": ["n2", "n1"],
                                                        "join": True})
    assert joining.voters() == ("n1", "n2") and joining.join


def test_a_secret_or_tls_or_insecure_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"NodeConfig\.secret_file"):
        NodeConfig(node_id="n1", data_dir=tmp_path, nodes=("n1=127.0.0.1:1",))
    with pytest.raises(ConfigError, match=r"NodeConfig\.secret_file"):
        NodeConfig(node_id="n1", data_dir=tmp_path, nodes=("n1=127.0.0.1:1",), tls_cert_file=tmp_path / "c",
                   tls_key_file=tmp_path / "k", tls_ca_file=tmp_path / "a")
    with pytest.raises(ConfigError, match="go together"):
        NodeConfig(node_id="n1", data_dir=tmp_path, nodes=("n1=127.0.0.1:1",), tls_cert_file=tmp_path / "c")


def test_the_command_prints_one_error_line_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("shards = 3", "shards = -1"))
    assert node_main(["--config", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: NodeConfig.shards: must be 0 to 26, got -1"]


def test_an_unreadable_secret_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    (tmp_path / "cluster.key").write_text("short")
    assert node_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 16" in err


def test_the_module_entry_point_is_the_same_command(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('preset = "local"', 'preset = "moon"'))
    result = subprocess.run([sys.executable, "-m", "synod.node", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: NodeConfig.preset: must be one of local, lan, got 'moon'"]
