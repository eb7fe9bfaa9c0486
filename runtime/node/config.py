"""Node configuration files (TOML): who the node is, where it listens, whom it dials.

A sample, with every key (paths are relative to the file)::

    [node]
    number = 17                 # ipn node number
    keys = "fleet"              # folder: node-17.key, fleet-root.pub, *.cred
    store = "node-17.sqlite3"   # durable bundle store; leave out for memory only
    bundle_lifetime_s = 2592000 # lifetime of the bundles this node creates (30 days: the
                                #   autonomy window, so a cell's backlog outlives a cut)
    store_wal_limit_kb = 4096   # the store's write-ahead log is checkpointed past this size
    accept_from = "fleet"       # whom this node relays for: "fleet" (nodes with a credential
                                #   in keys, and peers), "peers" (configured [[peer]] nodes),
                                #   "any", or a list of node numbers (plus the peers). Bundles
                                #   for this node itself are taken from anyone (they are
                                #   verified on delivery). Without TLS a node id is a claim.
    protocol_version = 3        # the protocol version this node speaks (default: the newest,
                                #   3); an older one pins it: it then reads and writes exactly
                                #   as an implementation of that version (spec/v2/versions.md)

    [[listen]]                  # accept neighbours here (any number of these)
    host = "127.0.0.1"
    port = 4556
    layer = "tcpclv4"           # tcpclv4 | tcpclv3 | mtcp

    [[peer]]                    # neighbours this node dials and redials with backoff
    node = 2                    # it must announce ipn:2.x, or else the session is refused
    # node_id = "dtn://n2/"     #   ... or exactly this id (a dtn: agent), routed as node 2
    host = "127.0.0.1"
    port = 4557
    layer = "tcpclv4"

    [routes]
    parent = 2                  # default route: node → cell coordinator → region
    static = { 3 = 2 }          # destination node → next hop

    [reconnect]
    initial_s = 0.5
    maximum_s = 60

    [links]                     # budgets across all sessions this node accepted
    max_sessions = 64           # more: SESS_TERM "Resource Exhaustion" (v3: SHUTDOWN "Busy")
    max_receive_mib = 256       # received bytes held (reassembly + custody); more: XFER_REFUSE
    retain_unconfirmed_s = 60   # MTCP / TCPCLv3 without acks: keep a sent bundle this long and
                                #   send it again if that session breaks meanwhile (0: never)
    ingress_max_bundles = 200000  # custody first: runs from accepted sessions are held (and
    ingress_max_mib = 256       #   acked) before the node routes them; within [quota]; 0: off
    [quota]                     # what the store may hold (a full store refuses transfers
    max_bytes = 1073741824      #   with TCPCLv4 "No Resources"; nothing accepted is lost)
    max_bundles = 50000
    source_share = 0.25         # at most this part of each for one neighbour

    [replay]                    # what counts as a replay (spec §10)
    max_age_s = 2592000         # refuse messages issued longer ago (30 days; the contact
    max_future_s = 300          #   plan's longest light time is added); or this far ahead
    max_per_issuer = 4096       # accepted messages remembered per issuer

    [tls]                       # optional: TCPCLv4 over TLS (RFC 9174 §4.4) on every
    certificate = "node-17.pem" # tcpclv4 listener and peer; PEM, naming ipn:17.0 as a URI
    key = "node-17-tls.key"     #   subjectAltName (§4.4.1 NODE-ID); its private key (PEM)
    ca = "fleet-ca.pem"         # the certificates that vouch for neighbours (PEM)
    require = true              # refuse neighbours without TLS (default true)
    authenticate_node_id = true # a neighbour's Node ID must be in its certificate (§4.4.3)

    [[contact]]                 # optional contact plan (DTN ms times), for scheduled links
    from = 17
    to = 2
    start = 848750000000
    end = 848753600000
    rate_bps = 1000000
    owlt_ms = 1200
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import attrs
from fleetwire.protocol.agent.contacts import ContactPlan, ContactPlanError
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.messages import PROTOCOL_VERSION, SUPPORTED_VERSIONS
from fleetwire.protocol.replay import DEFAULT_BUNDLE_LIFETIME_MS, ReplayPolicy

from ..store.store import Quota

#: Quota of ``fleetwire node``'s store when the config says nothing (``[quota]``).
DEFAULT_QUOTA = Quota(max_bundles=50_000, max_bytes=1 << 30, source_share=0.25)

LAYERS = ("tcpclv4", "tcpclv3", "mtcp")


class ConfigError(FleetwireError):
    """The configuration file is missing, not TOML, or says something impossible."""

    code = "config"

    def __init__(
        self, message: str, hint: str = "see the sample in `fleetwire node --help`"
    ) -> None:
        super().__init__(message)
        self.hint = hint


@attrs.frozen
class Endpoint:
    host: str
    port: int
    layer: str = "tcpclv4"
    node: int | None = None  # for peers: the neighbour's node number
    #: For peers that announce a non-ipn Node ID (a dtn: agent): the id to expect instead.
    node_id: str | None = None


@attrs.frozen
class TlsConfig:
    """TLS for TCPCLv4 links (RFC 9174 §4.4): this node's certificate and key, the CA file
    that vouches for neighbours, and how strict to be."""

    certificate: Path
    key: Path
    ca: Path
    require: bool = True
    authenticate_node_id: bool = True


#: ``accept_from`` words; a list of node numbers is the fourth form.
ACCEPT_FROM = ("fleet", "peers", "any")


@attrs.frozen
class LinkLimits:
    """The ``[links]`` table: global budgets of accepted sessions, and no-ack retention."""

    max_sessions: int = 64
    max_receive_bytes: int = 256 * 1024 * 1024
    retain_unconfirmed_s: float = 60.0
    #: The node's ingress (custody first for accepted sessions); 0 in either turns it off.
    ingress_max_bundles: int = 200_000
    ingress_max_bytes: int = 256 * 1024 * 1024


@attrs.frozen
class FileConfig:
    node: int
    keys: Path
    store: Path | None
    bundle_lifetime_ms: int
    listen: tuple[Endpoint, ...]
    peers: tuple[Endpoint, ...]
    parent: int | None
    static_routes: dict[int, int]
    reconnect_initial_s: float
    reconnect_maximum_s: float
    contact_plan: ContactPlan | None = attrs.field(eq=False)
    tls: TlsConfig | None = None
    #: Whom this node relays for (see the sample): a word of ACCEPT_FROM or node numbers.
    accept_from: str | tuple[int, ...] = "fleet"
    links: LinkLimits = LinkLimits()
    quota: Quota = DEFAULT_QUOTA
    replay: ReplayPolicy = attrs.field(factory=ReplayPolicy)
    store_wal_limit_kb: int = 4096
    #: ``[node] protocol_version``: the version the node speaks (pinned if older than ours).
    protocol_version: int = PROTOCOL_VERSION
    #: ``[demo]``: the node plays its part of ``fleetwire demo --processes`` (checked there).
    demo: dict[str, Any] | None = attrs.field(default=None, eq=False)


def _table(data: dict[str, Any], key: str, allowed: set[str] | None = None) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table, got {value!r}")
    unknown = set(value) - allowed if allowed is not None else set()
    if unknown:
        raise ConfigError(
            f"[{key}]: unknown keys {sorted(unknown)}",
            hint=f"[{key}] takes {sorted(allowed or ())}",
        )
    return value


def _int(table: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = table.get(key, default)
    if type(value) is not int or value < 0:
        raise ConfigError(f"{where}.{key} must be a non-negative integer, got {value!r}")
    return value


def _seconds(table: dict[str, Any], key: str, where: str, default: float) -> float:
    """A positive, finite number of seconds (TOML integer or float)."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{where}.{key} must be a number of seconds, got {value!r}",
            hint=f"for example {key} = {default}",
        )
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{where}.{key} must be more than 0 seconds, got {value!r}",
            hint=f"for example {key} = {default}",
        )
    return float(value)


def _quota(data: dict[str, Any]) -> Quota:
    table = _table(data, "quota", {"max_bytes", "max_bundles", "source_share"})
    default = DEFAULT_QUOTA
    max_bytes = _int(table, "max_bytes", "quota", default.max_bytes)
    max_bundles = _int(table, "max_bundles", "quota", default.max_bundles)
    share = table.get("source_share", default.source_share)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ConfigError(
            f"quota.source_share must be a fraction above 0 and at most 1, got {share!r}",
            hint="for example source_share = 0.25 (one neighbour may fill a quarter)",
        )
    return Quota(max_bundles=max_bundles, max_bytes=max_bytes, source_share=float(share))


def _replay(data: dict[str, Any]) -> ReplayPolicy:
    table = _table(data, "replay", {"max_age_s", "max_future_s", "max_per_issuer"})
    default = ReplayPolicy()
    max_per_issuer = _int(table, "max_per_issuer", "replay", default.max_per_issuer)
    if max_per_issuer < 1:
        raise ConfigError("replay.max_per_issuer must be at least 1, got 0")
    return ReplayPolicy(
        max_age=round(_seconds(table, "max_age_s", "replay", default.max_age / 1000) * 1000),
        max_future=round(
            _seconds(table, "max_future_s", "replay", default.max_future / 1000) * 1000
        ),
        max_per_issuer=max_per_issuer,
    )


def _endpoint(entry: Any, where: str, peer: bool) -> Endpoint:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    allowed = {"host", "port", "layer"} | ({"node", "node_id"} if peer else set())
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    layer = entry.get("layer", "tcpclv4")
    if layer not in LAYERS:
        raise ConfigError(f"{where}.layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    host = entry.get("host", "127.0.0.1")
    if not isinstance(host, str):
        raise ConfigError(f"{where}.host must be a string")
    port = _int(entry, "port", where)
    if port > 65535:
        raise ConfigError(f"{where}.port {port} is not a TCP port")
    node_id = entry.get("node_id")
    if node_id is not None and (not isinstance(node_id, str) or ":" not in node_id):
        raise ConfigError(
            f"{where}.node_id must be the Node ID the peer announces, a URI, got {node_id!r}",
            hint='for example node_id = "dtn://ud3tn.dtn/"',
        )
    return Endpoint(host, port, layer, _int(entry, "node", where) if peer else None, node_id)


def _tls(data: dict[str, Any], base: Path) -> TlsConfig | None:
    if "tls" not in data:
        return None
    table = _table(data, "tls")
    allowed = {"certificate", "key", "ca", "require", "authenticate_node_id"}
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"[tls]: unknown keys {sorted(unknown)}")
    paths = {}
    for name in ("certificate", "key", "ca"):
        value = table.get(name)
        if not isinstance(value, str):
            raise ConfigError(
                f"[tls] needs `{name}`, a path to a PEM file",
                hint="certificate and key are this node's; ca vouches for its neighbours",
            )
        paths[name] = (base / value).resolve()  # read when the node starts (tls_contexts)
    flags = {}
    for name in ("require", "authenticate_node_id"):
        value = table.get(name, True)
        if type(value) is not bool:
            raise ConfigError(f"[tls] {name} must be true or false, got {value!r}")
        flags[name] = value
    return TlsConfig(paths["certificate"], paths["key"], paths["ca"], **flags)


def _accept_from(node: dict[str, Any]) -> str | tuple[int, ...]:
    value = node.get("accept_from", "fleet")
    if isinstance(value, str) and value in ACCEPT_FROM:
        return value
    if isinstance(value, list) and all(type(n) is int and n >= 0 for n in value):
        return tuple(value)
    raise ConfigError(
        f"[node] accept_from must be one of {', '.join(ACCEPT_FROM)} or a list of node "
        f"numbers, got {value!r}",
        hint='"fleet" relays for nodes with a credential in the keys folder',
    )


def _links(data: dict[str, Any]) -> LinkLimits:
    table = _table(
        data,
        "links",
        {
            "max_sessions",
            "max_receive_mib",
            "retain_unconfirmed_s",
            "ingress_max_bundles",
            "ingress_max_mib",
        },
    )
    sessions = _int(table, "max_sessions", "links", 64)
    mib = _int(table, "max_receive_mib", "links", 256)
    ingress_bundles = _int(table, "ingress_max_bundles", "links", 200_000)
    ingress_mib = _int(table, "ingress_max_mib", "links", 256)
    retain = table.get("retain_unconfirmed_s", 60)
    if type(retain) not in (int, float) or not 0 <= retain < math.inf:
        raise ConfigError(f"[links] retain_unconfirmed_s must be seconds >= 0, got {retain!r}")
    if sessions < 1 or mib < 1:
        raise ConfigError("[links] max_sessions and max_receive_mib must be at least 1")
    return LinkLimits(
        sessions, mib * 1024 * 1024, float(retain), ingress_bundles, ingress_mib * 1024 * 1024
    )


def parse_config(data: dict[str, Any], base: Path) -> FileConfig:
    """Check a parsed TOML document; relative paths are taken from ``base``."""
    sections = {
        "node",
        "listen",
        "peer",
        "routes",
        "reconnect",
        "contact",
        "tls",
        "quota",
        "replay",
        "links",
        "demo",
    }
    unknown = set(data) - sections
    if unknown:
        raise ConfigError(
            f"unknown sections {sorted(unknown)}", hint=f"sections: {sorted(sections)}"
        )
    node = _table(
        data,
        "node",
        {
            "number",
            "keys",
            "store",
            "bundle_lifetime_s",
            "store_wal_limit_kb",
            "accept_from",
            "protocol_version",
        },
    )
    if "number" not in node:
        raise ConfigError("[node] needs `number`, the node's ipn node number")
    keys = node.get("keys", ".")
    store = node.get("store")
    if not isinstance(keys, str) or (store is not None and not isinstance(store, str)):
        raise ConfigError("[node] keys and store are paths (strings)")
    routes = _table(data, "routes", {"parent", "static"})
    static = routes.get("static", {})
    if not isinstance(static, dict):
        raise ConfigError("[routes] static must be a table of destination = next hop")
    static_routes = {}
    for destination, hop in static.items():
        if not destination.isdigit() or type(hop) is not int or hop < 0:
            raise ConfigError(
                f"[routes] static: {destination} = {hop!r}: node numbers must be integers",
                hint="static = { 3 = 2 } sends bundles for node 3 to neighbour 2",
            )
        static_routes[int(destination)] = hop
    reconnect = _table(data, "reconnect", {"initial_s", "maximum_s"})
    plan = None
    if "contact" in data:
        try:
            plan = ContactPlan.from_mapping({"contact": data["contact"]})
        except ContactPlanError as exc:
            raise ConfigError(f"contact plan: {exc.message}") from None
    listen = data.get("listen", [])
    peers = data.get("peer", [])
    if not isinstance(listen, list) or not isinstance(peers, list):
        raise ConfigError("[[listen]] and [[peer]] are arrays of tables")
    tls = _tls(data, base)
    endpoints = [
        *(_endpoint(e, f"listen[{i}]", False) for i, e in enumerate(listen)),
        *(_endpoint(e, f"peer[{i}]", True) for i, e in enumerate(peers)),
    ]
    if tls is not None and tls.require:
        for endpoint in endpoints:
            if endpoint.layer != "tcpclv4":
                raise ConfigError(
                    f"[tls] require = true, but {endpoint.host}:{endpoint.port} uses "
                    f"{endpoint.layer}, which has no TLS",
                    hint='use layer = "tcpclv4" there, or set require = false',
                )
    lifetime = _int(node, "bundle_lifetime_s", "node", DEFAULT_BUNDLE_LIFETIME_MS // 1000)
    if lifetime == 0:
        raise ConfigError(
            "node.bundle_lifetime_s must be more than 0",
            hint="default 2592000 (30 days, the autonomy window)",
        )
    return FileConfig(
        node=_int(node, "number", "node"),
        keys=(base / keys).resolve(),
        store=None if store is None else (base / store).resolve(),
        bundle_lifetime_ms=lifetime * 1000,
        listen=tuple(_endpoint(e, f"listen[{i}]", False) for i, e in enumerate(listen)),
        peers=tuple(_endpoint(e, f"peer[{i}]", True) for i, e in enumerate(peers)),
        parent=_int(routes, "parent", "routes") if "parent" in routes else None,
        static_routes=static_routes,
        reconnect_initial_s=_seconds(reconnect, "initial_s", "reconnect", 0.5),
        reconnect_maximum_s=_seconds(reconnect, "maximum_s", "reconnect", 60.0),
        contact_plan=plan,
        tls=tls,
        accept_from=_accept_from(node),
        links=_links(data),
        quota=_quota(data),
        replay=_replay(data),
        store_wal_limit_kb=max(1, _int(node, "store_wal_limit_kb", "node", 4096)),
        protocol_version=_protocol_version(node),
        demo=_table(data, "demo") if "demo" in data else None,
    )


def _protocol_version(node: dict[str, Any]) -> int:
    """``[node] protocol_version``: one of the versions this implementation speaks."""
    value = node.get("protocol_version", PROTOCOL_VERSION)
    if type(value) is not int or value not in SUPPORTED_VERSIONS:
        raise ConfigError(
            f"[node] protocol_version must be one of {', '.join(map(str, SUPPORTED_VERSIONS))}, "
            f"got {value!r}",
            hint=f"protocol_version = 1 pins the node to version 1; leave it out for {PROTOCOL_VERSION}",
        )
    return value


def load_config(path: Path) -> FileConfig:
    """Read and check a node configuration file."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data, path.parent)
