"""Node configuration files: the sample parses, mistakes are named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from fleetwire.runtime import config as config_module
from fleetwire.runtime.config import ConfigError, load_config, parse_config


def test_the_documented_sample_parses(tmp_path: Path) -> None:
    sample = config_module.__doc__.split("::", 1)[1]  # type: ignore[union-attr]
    path = tmp_path / "node.toml"
    path.write_text("\n".join(line[4:] for line in sample.splitlines()))
    loaded = load_config(path)
    assert loaded.node == 17
    assert loaded.keys == (tmp_path / "fleet").resolve()
    assert loaded.store == (tmp_path / "node-17.sqlite3").resolve()
    assert loaded.store_wal_limit_kb == 4096
    assert loaded.listen[0].port == 4556 and loaded.listen[0].layer == "tcpclv4"
    assert loaded.peers[0].node == 2
    assert loaded.parent == 2 and loaded.static_routes == {3: 2}
    assert loaded.contact_plan is not None and len(loaded.contact_plan) == 1


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[node]\n", "number"),
        ("[node]\nnumber = -1\n", "non-negative"),
        ("[node]\nnumber = 1\n[[listen]]\nport = 70000\n", "not a TCP port"),
        ("[node]\nnumber = 1\n[[listen]]\nport = 1\nlayer = 'udp'\n", "layer must be one of"),
        ("[node]\nnumber = 1\n[[peer]]\nport = 1\n", "node"),
        ("[node]\nnumber = 1\n[[peer]]\nnode = 2\nport = 1\ncolour = 'red'\n", "unknown keys"),
        ("[node]\nnumber = 1\n[nodes]\n", "unknown sections"),
        ("[node]\nnumber = 1\nstore_wal_limit_kb = '4M'\n", "store_wal_limit_kb"),
        ("[node]\nnumber = 1\n[[contact]]\nfrom = 1\nto = 2\n", "contact"),
    ],
)
def test_mistakes_are_named(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_config(tomllib.loads(text), Path("."))


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
