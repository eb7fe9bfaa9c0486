"""TLS from the node configuration file: two configured nodes over TCPCLv4 + TLS on 127.0.0.1.

A fleet CA signs each node's certificate, which names the node ``ipn:<n>.0`` as a URI
subjectAltName (RFC 9174 §4.4.1 NODE-ID). With ``[tls]`` in both files the link runs over
TLS, each side authenticates the other's Node ID against its certificate (§4.4.3), and a
signed message crosses; a node whose certificate names another node is refused.
"""

from __future__ import annotations

import datetime
import socket
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.node.config import ConfigError, load_config
from fleetwire.runtime.node.tcp_node import open_configured_node, tls_contexts


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(folder: Path, nodes: dict[int, int]) -> None:
    """A CA (fleet-ca.pem) and, per ``file number: named node``, node-<file>.pem / .tls.key."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (folder / "fleet-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for file_number, named in nodes.items():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"node {named}")])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(100 + file_number)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"ipn:{named}.0")]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        (folder / f"node-{file_number}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"node-{file_number}.tls.key").write_bytes(_pem_key(key))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


TLS = '[tls]\ncertificate = "node-{n}.pem"\nkey = "node-{n}.tls.key"\nca = "fleet-ca.pem"\n'


def write_fleet(folder: Path, port: int, names: dict[int, int]) -> tuple[Path, Path]:
    keys = folder / "keys"
    main(["keys", "root", str(keys)])
    for node in (1, 2):
        main(["keys", "node", str(keys), "--node", str(node)])
    make_pki(folder, names)
    one, two = folder / "one.toml", folder / "two.toml"
    one.write_text(f'[node]\nnumber = 1\nkeys = "keys"\n[[listen]]\nport = {port}\n' + TLS.format(n=1))
    two.write_text(
        f'[node]\nnumber = 2\nkeys = "keys"\n[[peer]]\nnode = 1\nport = {port}\n'
        "[reconnect]\ninitial_s = 0.05\nmaximum_s = 0.2\n" + TLS.format(n=2)
    )
    return one, two


async def test_a_message_crosses_a_tls_link_between_configured_nodes(tmp_path: Path) -> None:
    one, two = write_fleet(tmp_path, free_port(), {1: 1, 2: 2})
    async with open_configured_node(load_config(one)) as receiver:
        inbox = receiver.subscribe()
        async with open_configured_node(load_config(two)) as sender:
            # issued now: readers refuse messages from outside their issued_at window
            claim = LeaseClaim(header=Header(issuer=2, issued_at=sender.now(), sequence=1),
                               resource="dock/7", term_ms=60_000)  # fmt: skip
            with trio.fail_after(20):
                await sender.links[1].wait_up()  # type: ignore[attr-defined]
                signed = await sender.send(claim, to=1)
                got = await inbox.receive()
            neighbour = receiver.links[2]
            assert isinstance(neighbour.stream, trio.SSLStream)  # type: ignore[attr-defined]
    assert got.content_id == signed.content_id and got.issuer == 2


async def test_a_certificate_naming_another_node_is_refused(tmp_path: Path) -> None:
    # node 2's certificate says ipn:9.0: node 1 must not let it in as node 2 (§4.4.3).
    one, two = write_fleet(tmp_path, free_port(), {1: 1, 2: 9})
    async with (
        open_configured_node(load_config(one)) as receiver,
        open_configured_node(load_config(two)) as sender,
    ):
        with trio.move_on_after(1.5):
            await sender.links[1].wait_up()  # type: ignore[attr-defined]
        assert not receiver.links, "node 1 accepted a neighbour it could not authenticate"


def test_tls_section_is_checked(tmp_path: Path) -> None:
    make_pki(tmp_path, {1: 1})
    good = TLS.format(n=1)
    base = '[node]\nnumber = 1\n[[listen]]\nport = 4556\nlayer = "{layer}"\n'
    config = load_config(_write(tmp_path, base.format(layer="tcpclv4") + good))
    assert config.tls is not None and config.tls.require and config.tls.authenticate_node_id
    for text, complaint in [
        (base.format(layer="tcpclv3") + good, "tcpclv3, which has no TLS"),
        (base.format(layer="tcpclv4") + '[tls]\nkey = "node-1.tls.key"\n', "needs `certificate`"),
        (base.format(layer="tcpclv4") + good + "require = 1\n", "true or false"),
        (base.format(layer="tcpclv4") + good + "cipher = 1\n", "unknown keys"),
    ]:
        with pytest.raises(ConfigError, match=complaint):
            load_config(_write(tmp_path, text))
    missing = load_config(_write(tmp_path, base.format(layer="tcpclv4") + good.replace("node-1.pem", "gone.pem")))
    assert missing.tls is not None
    with pytest.raises(ConfigError, match="cannot load the certificate"):
        tls_contexts(missing.tls)
    # Without `require`, plain layers may sit beside TLS ones.
    assert load_config(_write(tmp_path, base.format(layer="mtcp") + good + "require = false\n"))


def _write(folder: Path, text: str) -> Path:
    path = folder / "node.toml"
    path.write_text(text)
    return path
