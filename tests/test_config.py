"""Node configuration files: the sample parses, mistakes are named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from fleetwire.runtime.node import config as config_module
from fleetwire.runtime.node.config import ConfigError, load_config, parse_config


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
    assert loaded.links.ingress_max_bundles == 200_000
    assert loaded.links.ingress_max_bytes == 256 * 1024 * 1024


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


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[reconnect]\ninitial_s = "fast"\n', "reconnect.initial_s must be a number of seconds"),
        ("[reconnect]\ninitial_s = {a = 1}\n", "reconnect.initial_s must be a number of seconds"),
        ("[reconnect]\ninitial_s = 0\n", "reconnect.initial_s must be more than 0"),
        ("[reconnect]\nmaximum_s = -1.5\n", "reconnect.maximum_s must be more than 0"),
        ("[reconnect]\ninitail_s = 1\n", r"\[reconnect\]: unknown keys \['initail_s'\]"),
        ("[node]\nbundle_lifetime_s = 0\n", "bundle_lifetime_s must be more than 0"),
        ("[routes]\nstatic = { x = 2 }\n", "node numbers must be integers"),
        ("[routes]\nstatic = { 3 = 'two' }\n", "node numbers must be integers"),
        ("[quota]\nmax_bytes = -1\n", "quota.max_bytes must be a non-negative integer"),
        ("[quota]\nsource_share = 2\n", "quota.source_share must be a fraction"),
        ("[quota]\nsource_share = 'half'\n", "quota.source_share must be a fraction"),
        ("[replay]\nmax_age_s = 'long'\n", "replay.max_age_s must be a number of seconds"),
        ("[replay]\nmax_per_issuer = 0\n", "replay.max_per_issuer must be at least 1"),
        ("[links]\ningress_max_mib = -1\n", "links.ingress_max_mib must be a non-negative"),
        ("[links]\ningress_max_bundles = 'many'\n", "links.ingress_max_bundles must be a"),
        ("[links]\ningress = 0\n", r"\[links\]: unknown keys \['ingress'\]"),
        ("reconnect = 3\n", r"\[reconnect\] must be a table"),
    ],
)
def test_bad_values_are_named_with_their_field(text: str, complaint: str) -> None:
    document = tomllib.loads(text)
    document.setdefault("node", {})["number"] = 1
    with pytest.raises(ConfigError, match=complaint) as raised:
        parse_config(document, Path("."))
    assert raised.value.hint


def test_quota_and_replay_defaults_and_values() -> None:
    loaded = parse_config(
        tomllib.loads(
            "[node]\nnumber = 1\n[quota]\nmax_bundles = 50\nsource_share = 0.5\n"
            "[replay]\nmax_age_s = 3600\nmax_future_s = 1.5\n"
        ),
        Path("."),
    )
    assert (loaded.quota.max_bundles, loaded.quota.source_share) == (50, 0.5)
    assert loaded.quota.max_bytes == config_module.DEFAULT_QUOTA.max_bytes
    assert (loaded.replay.max_age, loaded.replay.max_future) == (3_600_000, 1500)
    default = parse_config({"node": {"number": 1}}, Path("."))
    assert default.quota == config_module.DEFAULT_QUOTA
    assert default.quota.max_bundles and default.quota.max_bytes and default.quota.source_share


@pytest.mark.parametrize("value", ['"fast"', "{a = 1}", "0"])
def test_the_cli_prints_one_line_and_a_hint_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    from fleetwire.runtime.cli.cli import main

    path = tmp_path / "node.toml"
    path.write_text(f"[node]\nnumber = 1\n[reconnect]\ninitial_s = {value}\n")
    assert main(["node", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("fleetwire node: error: reconnect.initial_s must be")
    assert err[1].startswith("hint: ") and len(err) == 2


def test_address_in_use_names_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from fleetwire.runtime.cli.cli import main

    main(["keys", "root", str(tmp_path / "keys")])
    main(["keys", "node", str(tmp_path / "keys"), "--node", "1"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "node.toml"
        path.write_text(f'[node]\nnumber = 1\nkeys = "keys"\n[[listen]]\nport = {port}\n')
        capsys.readouterr()
        assert main(["node", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert (
        err[0]
        == f"fleetwire node: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert err[1].startswith("hint: ")


def test_bundles_live_for_the_autonomy_window_by_default() -> None:
    # A cell is designed to run through a 30-day cut: what it sends into the cut must outlive
    # it, and the readers' replay window (max_age) must still take it when it arrives.
    from fleetwire.protocol.agent.agent import AgentConfig
    from fleetwire.protocol.replay import AUTONOMY_WINDOW_MS, DEFAULT_MAX_AGE_MS, ReplayPolicy
    from fleetwire.runtime.node.node import NodeConfig

    assert AUTONOMY_WINDOW_MS == 30 * 86_400_000
    loaded = parse_config(tomllib.loads("[node]\nnumber = 1\n"), Path("."))
    assert loaded.bundle_lifetime_ms == AUTONOMY_WINDOW_MS
    for fields in (attrs_fields(NodeConfig), attrs_fields(AgentConfig)):
        assert fields["bundle_lifetime_ms"] == AUTONOMY_WINDOW_MS
    assert DEFAULT_MAX_AGE_MS >= AUTONOMY_WINDOW_MS
    assert ReplayPolicy().max_age >= loaded.bundle_lifetime_ms


def attrs_fields(cls: type) -> dict[str, object]:
    import attrs

    return {f.name: f.default for f in attrs.fields(cls)}


def test_the_ingress_bound_is_read_from_links() -> None:
    """``[links] ingress_max_bundles`` / ``ingress_max_mib`` bound a node's ingress (custody
    first); 0 turns it off. Left out: 200,000 bundles and 256 MiB."""
    loaded = parse_config(
        tomllib.loads(
            "[node]\nnumber = 1\n[links]\ningress_max_bundles = 0\ningress_max_mib = 8\n"
        ),
        Path("."),
    )
    assert (loaded.links.ingress_max_bundles, loaded.links.ingress_max_bytes) == (0, 8 << 20)
    default = parse_config({"node": {"number": 1}}, Path("."))
    assert (default.links.ingress_max_bundles, default.links.ingress_max_bytes) == (
        200_000,
        256 << 20,
    )
