"""Digests: what a node tells its coordinator about its own telemetry instead of streaming it.

Theory of operation
-------------------
High-rate telemetry stays on the node (the seeds: quality control is local and summarised). A
:class:`DigestBuilder` takes every sample (:meth:`DigestBuilder.observe`, integers in the
metric's unit with ``now``) and, once per ``period_ms`` (:meth:`DigestBuilder.tick`), emits a
:class:`Digest`: for each metric its count, mean and sigma, minimum and maximum, a histogram over
the metric's fixed bucket edges, and the Shewhart control-chart figures — how many samples fell
outside ``center ± k·sigma`` (out of control) and the largest deviation seen, in milli-sigma
(the *anomaly score*). The samples themselves are kept locally as a **detail** chunk named by
its content id (:class:`KeepDetail`); the digest lists those ids, so a coordinator that sees an
anomaly can pull exactly that detail by content id and check what it gets against the id
(:func:`check_detail`).

**Event-driven digests.** A sample outside the control limits, or past the metric's ``alarm``
threshold, is a threshold crossing: the builder emits a digest at once (trigger
:attr:`Trigger.THRESHOLD`) instead of waiting for the period, at most one per
``min_event_gap_ms``; the period then starts afresh.

**Control limits.** A metric's ``center`` and ``sigma`` come from its :class:`MetricSpec`, or,
when not given, from its first ``baseline_samples`` samples (Phase I of a control chart, by
Welford's method) — after which they stay fixed, so a slow drift shows as out-of-control counts
instead of being absorbed into the baseline.

Wire forms, deterministic CBOR (RFC 8949 §4.2.1), integers only, in the CDDL (RFC 8610) of
:data:`CDDL`: a ``digest`` (:meth:`Digest.to_cbor`) and a ``detail`` chunk.
:meth:`Digest.from_cbor` reads it from untrusted bytes with bounded sizes and typed errors
(``digest-invalid``). Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .. import cbor
from ..errors import LocalProtocolError, RemoteProtocolError
from ..ids import ContentId, ContentIdError

__all__ = [
    "CDDL",
    "DRAFT_WIRE",
    "Action",
    "Digest",
    "DigestBuilder",
    "DigestError",
    "EmitDigest",
    "KeepDetail",
    "MetricSpec",
    "MetricStats",
    "Trigger",
    "check_detail",
    "decode_detail",
]

MAX_METRICS: Final = 64
MAX_BUCKETS: Final = 64
MAX_DETAILS: Final = 64
MAX_NAME_BYTES: Final = 64
INT64: Final = 1 << 63
UINT64_MAX: Final = (1 << 64) - 1
#: Samples are exact in the float arithmetic of the statistics up to 2^53, and their mean and
#: sigma in thousandths then fit the 64-bit fields of the wire form.
SAMPLE_LIMIT: Final = 1 << 53

#: The wire forms in CDDL (RFC 8610); the tests validate encodings against it.
CDDL: Final = """
digest = {
  0: uint,                     ; node
  1: uint,                     ; period_start, DTN time
  2: uint,                     ; period_end, DTN time, >= period_start
  3: 0 / 1,                    ; trigger: periodic / threshold crossing
  4: {0*64 metric => stats},
  ? 5: [1*64 content-id],      ; detail chunks kept on the node
}
metric = tstr .size (1..64)
stats = {
  0: uint,                     ; count
  1: int64,                    ; mean, in thousandths of the metric's unit
  2: uint,                     ; sigma, in thousandths
  3: int64,                    ; minimum
  4: int64,                    ; maximum
  5: [1*64 uint],              ; histogram counts over the metric's fixed edges
  6: uint,                     ; samples out of control (beyond center +- k sigma)
  7: uint,                     ; anomaly score: largest deviation, in thousandths of sigma
}
detail = {0: uint, 1: uint, 2: {* metric => [* sample]}}   ; node, period_start, samples
sample = [time: uint, value: int64]
int64 = -9223372036854775808..9223372036854775807
content-id = bstr .size 34
"""


#: The proposed version-2 message (spec/v2/faults.md, a draft): type code and body keys. The
#: header is the message's; the fields are :meth:`Digest.draft_body`'s.
DRAFT_WIRE: Final[dict[str, tuple[int, tuple[tuple[int, str], ...]]]] = {
    "digest": (
        10,
        ((8, "period_start"), (9, "period_end"), (10, "trigger"), (11, "metrics"), (12, "details")),
    ),
}


class DigestError(RemoteProtocolError):
    """Digest or detail bytes this reader does not accept."""

    code = "digest-invalid"


class Trigger(enum.IntEnum):
    PERIODIC = 0
    THRESHOLD = 1


@attrs.frozen(slots=True)
class MetricSpec:
    """A metric's histogram edges, control limits and alarm threshold (in its own unit)."""

    #: Bucket ``i`` counts samples in ``[edges[i-1], edges[i])``; the first and last are open.
    edges: tuple[int, ...] = ()
    center: int | None = None
    sigma: int | None = None
    k: int = 3
    #: Absolute value at or past which a sample is a threshold crossing regardless of the chart.
    alarm: int | None = None
    baseline_samples: int = 30

    def __attrs_post_init__(self) -> None:
        if list(self.edges) != sorted(set(self.edges)) or len(self.edges) >= MAX_BUCKETS:
            raise LocalProtocolError(f"bucket edges must ascend, at most {MAX_BUCKETS - 1}")
        if (self.center is None) != (self.sigma is None) or (
            self.sigma is not None and self.sigma <= 0
        ):
            raise LocalProtocolError("give center and sigma together, sigma > 0, or neither")


@attrs.frozen(slots=True)
class MetricStats:
    count: int
    mean_milli: int
    sigma_milli: int
    minimum: int
    maximum: int
    buckets: tuple[int, ...]
    out_of_control: int
    anomaly_milli: int


def _sorted_metrics(metrics: Mapping[str, MetricStats]) -> dict[str, MetricStats]:
    return dict(sorted(metrics.items()))


@attrs.frozen(slots=True)
class Digest:
    """One digest: a period's statistics per metric and the ids of the detail kept locally."""

    node: int
    period_start: int
    period_end: int
    trigger: Trigger
    metrics: Mapping[str, MetricStats] = attrs.field(converter=_sorted_metrics)
    details: tuple[ContentId, ...] = ()

    def to_cbor(self) -> bytes:
        stats = {
            name: {
                0: s.count,
                1: s.mean_milli,
                2: s.sigma_milli,
                3: s.minimum,
                4: s.maximum,
                5: list(s.buckets),
                6: s.out_of_control,
                7: s.anomaly_milli,
            }
            for name, s in self.metrics.items()
        }
        body: dict[int, Any] = {
            0: self.node,
            1: self.period_start,
            2: self.period_end,
            3: int(self.trigger),
            4: stats,
        }
        if self.details:
            body[5] = [cid.raw for cid in self.details]
        return cbor.encode(body)

    def draft_body(self) -> dict[str, Any]:
        """The body of the draft version-2 digest message (:data:`DRAFT_WIRE`), by field name."""
        body: dict[int, Any] = cbor.decode(self.to_cbor())
        fields = {
            "period_start": body[1],
            "period_end": body[2],
            "trigger": body[3],
            "metrics": body[4],
        }
        if self.details:
            fields["details"] = body[5]
        return fields

    @classmethod
    def from_cbor(cls, data: bytes) -> Digest:
        """Read a digest from untrusted bytes (bounded; :class:`DigestError` names the field)."""
        value = cbor.decode(
            data,
            cbor.Limits(
                max_size=64 * 1024,
                max_depth=4,
                max_container_items=MAX_BUCKETS,
                max_total_items=4 * 1024,
                max_string_length=MAX_NAME_BYTES,
                allowed_tags=frozenset(),
            ),
        )
        if not isinstance(value, dict) or not {0, 1, 2, 3, 4} <= set(value) <= {0, 1, 2, 3, 4, 5}:
            raise DigestError("a digest is the map {0..4, ?5}")
        node, start, end = (
            _uint(value[k], name)
            for k, name in ((0, "node"), (1, "period_start"), (2, "period_end"))
        )
        if end < start:
            raise DigestError("period_end: before period_start")
        try:
            trigger = Trigger(value[3])
        except ValueError:
            raise DigestError("trigger: must be 0 (periodic) or 1 (threshold)") from None
        if not isinstance(value[4], dict) or len(value[4]) > MAX_METRICS:
            raise DigestError(f"metrics: a map of at most {MAX_METRICS} metrics")
        metrics = {
            _name(name): _stats(stats, f"metrics[{name!r}]") for name, stats in value[4].items()
        }
        details: tuple[ContentId, ...] = ()
        if 5 in value:
            raw = value[5]
            if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_DETAILS:
                raise DigestError(f"details: 1..{MAX_DETAILS} content ids")
            try:
                details = tuple(
                    ContentId.from_bytes(bytes(r)) if isinstance(r, bytes) else _fail("details")
                    for r in raw
                )
            except ContentIdError as exc:
                raise DigestError(f"details: {exc.message}") from None
        digest = cls(node, start, end, trigger, metrics, details)
        if digest.to_cbor() != data:
            raise DigestError("not the one encoding of this digest")
        return digest


@attrs.frozen(slots=True)
class EmitDigest:
    """Sign and send ``digest`` to the coordinator."""

    digest: Digest


@attrs.frozen(slots=True)
class KeepDetail:
    """Store ``data`` locally under ``content_id`` for a later fetch by content id."""

    content_id: ContentId
    data: bytes


Action = EmitDigest | KeepDetail


@attrs.define(slots=True)
class _Metric:
    spec: MetricSpec
    center: float | None = None
    sigma: float | None = None
    # Phase I (baseline) accumulators, Welford's method.
    base_n: int = 0
    base_mean: float = 0.0
    base_m2: float = 0.0
    # This period.
    samples: list[tuple[int, int]] = attrs.Factory(list)
    count: int = 0
    total: int = 0
    total_sq: int = 0
    minimum: int = 0
    maximum: int = 0
    buckets: list[int] = attrs.Factory(list)
    out_of_control: int = 0
    anomaly_milli: int = 0

    def reset(self) -> None:
        self.samples = []
        self.count = self.total = self.total_sq = self.minimum = self.maximum = 0
        self.buckets = [0] * (len(self.spec.edges) + 1)
        self.out_of_control = self.anomaly_milli = 0


class DigestBuilder:
    """One node's digests (module docstring). ``max_samples`` bounds the detail kept per period."""

    def __init__(
        self,
        node: int,
        metrics: Mapping[str, MetricSpec],
        period_ms: int,
        start: int,
        *,
        min_event_gap_ms: int = 60_000,
        max_samples: int = 100_000,
    ) -> None:
        if not 0 < len(metrics) <= MAX_METRICS:
            raise LocalProtocolError(f"1..{MAX_METRICS} metrics")
        for name in metrics:
            _name(name, LocalProtocolError)
        self.node = node
        self.period_ms = period_ms
        self.min_event_gap_ms = min_event_gap_ms
        self.max_samples = max_samples
        self._metrics: dict[str, _Metric] = {}
        for name, spec in metrics.items():
            metric = _Metric(spec, spec.center, spec.sigma)
            metric.reset()
            self._metrics[name] = metric
        self._period_start = start
        self._last_event: int | None = None

    def observe(self, metric: str, value: int, now: int) -> list[Action]:
        """One sample; returns an event-driven digest's actions if it crosses a threshold."""
        m = self._metrics.get(metric)
        if m is None:
            raise LocalProtocolError(f"unknown metric {metric!r}")
        if not -SAMPLE_LIMIT <= value <= SAMPLE_LIMIT:
            raise LocalProtocolError(f"{metric}: sample outside ±2^53")
        if m.count == 0:
            m.minimum = m.maximum = value
        m.count += 1
        m.total += value
        m.total_sq += value * value
        m.minimum, m.maximum = min(m.minimum, value), max(m.maximum, value)
        m.buckets[bisect.bisect_right(m.spec.edges, value)] += 1
        if len(m.samples) < self.max_samples:
            m.samples.append((now, value))
        crossing = m.spec.alarm is not None and abs(value) >= abs(m.spec.alarm)
        if m.center is None or m.sigma is None:
            self._learn(m, value)
        else:
            z_milli = min(int(1000 * abs(value - m.center) / m.sigma), UINT64_MAX)
            m.anomaly_milli = max(m.anomaly_milli, z_milli)
            if z_milli > 1000 * m.spec.k:
                m.out_of_control += 1
                crossing = True
        if crossing and (
            self._last_event is None or now - self._last_event >= self.min_event_gap_ms
        ):
            self._last_event = now
            return self._emit(now, Trigger.THRESHOLD)
        return []

    def tick(self, now: int) -> list[Action]:
        """The periodic digest, when a period has passed."""
        if now - self._period_start < self.period_ms:
            return []
        return self._emit(now, Trigger.PERIODIC)

    def next_deadline(self) -> int:
        return self._period_start + self.period_ms

    def limits(self, metric: str) -> tuple[float, float] | None:
        """The metric's control chart center and sigma, once known."""
        m = self._metrics[metric]
        return None if m.center is None or m.sigma is None else (m.center, m.sigma)

    def _learn(self, m: _Metric, value: int) -> None:
        m.base_n += 1
        delta = value - m.base_mean
        m.base_mean += delta / m.base_n
        m.base_m2 += delta * (value - m.base_mean)
        if m.base_n >= m.spec.baseline_samples:
            m.center = m.base_mean
            m.sigma = max(math.sqrt(m.base_m2 / (m.base_n - 1)), 1.0) if m.base_n > 1 else 1.0

    def _emit(self, now: int, trigger: Trigger) -> list[Action]:
        actions: list[Action] = []
        stats: dict[str, MetricStats] = {}
        samples: dict[str, list[list[int]]] = {}
        for name, m in self._metrics.items():
            if m.count:
                mean = m.total / m.count
                variance = max(m.total_sq / m.count - mean * mean, 0.0)
                sigma = math.sqrt(variance * m.count / (m.count - 1)) if m.count > 1 else 0.0
            else:
                mean = sigma = 0.0
            stats[name] = MetricStats(
                m.count, round(1000 * mean), round(1000 * sigma), m.minimum, m.maximum,
                tuple(m.buckets), m.out_of_control, m.anomaly_milli,
            )  # fmt: skip
            if m.samples:
                samples[name] = [[t, v] for t, v in m.samples]
            m.reset()
        details: tuple[ContentId, ...] = ()
        if samples:
            data = cbor.encode({0: self.node, 1: self._period_start, 2: samples})
            cid = ContentId.of(data)
            actions.append(KeepDetail(cid, data))
            details = (cid,)
        digest = Digest(self.node, self._period_start, now, trigger, stats, details)
        self._period_start = now
        actions.append(EmitDigest(digest))
        return actions


def check_detail(expected: ContentId, data: bytes) -> bytes:
    """A fetched detail chunk is accepted only if it is what the digest's id names."""
    if not expected.matches(data):
        raise DigestError(f"detail does not match its content id {expected.short()}")
    return data


def decode_detail(data: bytes, max_bytes: int = 4 << 20) -> dict[str, list[tuple[int, int]]]:
    """The samples in a detail chunk (bounded reader; :class:`DigestError` on anything else)."""
    value = cbor.decode(
        data,
        cbor.Limits(
            max_size=max_bytes, max_depth=4, max_container_items=max_bytes // 3,
            max_total_items=max_bytes, max_string_length=MAX_NAME_BYTES, allowed_tags=frozenset(),
        ),
    )  # fmt: skip
    if not isinstance(value, dict) or set(value) != {0, 1, 2} or not isinstance(value[2], dict):
        raise DigestError("a detail chunk is the map {0: node, 1: period_start, 2: samples}")
    out: dict[str, list[tuple[int, int]]] = {}
    for name, rows in value[2].items():
        if not isinstance(rows, list):
            raise DigestError(f"samples[{name!r}]: a list of [time, value]")
        out[_name(name)] = [_sample(row, name) for row in rows]
    return out


def _fail(path: str) -> ContentId:
    raise DigestError(f"{path}: content ids are byte strings")


def _uint(value: Any, path: str) -> int:
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise DigestError(f"{path}: an unsigned integer")
    return value


def _int(value: Any, path: str) -> int:
    if type(value) is not int or not -INT64 <= value < INT64:
        raise DigestError(f"{path}: a 64-bit integer")
    return value


def _name(name: Any, error: type[Exception] = DigestError) -> str:
    if not isinstance(name, str) or not 1 <= len(name.encode()) <= MAX_NAME_BYTES:
        raise error(f"a metric name is text of 1..{MAX_NAME_BYTES} bytes, not {name!r:.80}")
    return name


def _sample(row: Any, name: str) -> tuple[int, int]:
    if not isinstance(row, list) or len(row) != 2:
        raise DigestError(f"samples[{name!r}]: each sample is [time, value]")
    return _uint(row[0], f"samples[{name!r}].time"), _int(row[1], f"samples[{name!r}].value")


def _stats(value: Any, path: str) -> MetricStats:
    if not isinstance(value, dict) or set(value) != set(range(8)):
        raise DigestError(f"{path}: stats are the map {{0..7}}")
    buckets = value[5]
    if not isinstance(buckets, list) or not 1 <= len(buckets) <= MAX_BUCKETS:
        raise DigestError(f"{path}.buckets: 1..{MAX_BUCKETS} counts")
    return MetricStats(
        count=_uint(value[0], f"{path}.count"),
        mean_milli=_int(value[1], f"{path}.mean_milli"),
        sigma_milli=_uint(value[2], f"{path}.sigma_milli"),
        minimum=_int(value[3], f"{path}.minimum"),
        maximum=_int(value[4], f"{path}.maximum"),
        buckets=tuple(_uint(b, f"{path}.buckets") for b in buckets),
        out_of_control=_uint(value[6], f"{path}.out_of_control"),
        anomaly_milli=_uint(value[7], f"{path}.anomaly_milli"),
    )
