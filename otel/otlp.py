"""Reading an OTLP/HTTP export (traces, logs or metrics): content type,
compression, protobuf or OTLP JSON, into plain spans and log records. Spans
that cannot be used (bad ids or times) are counted and described, never
stored; a body that cannot be read at all is a 400.
"""

import base64
import binascii
import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags

from thinnest_analytics.errors import ApiError
from thinnest_analytics.parsing import json_body

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_US = (EARLIEST - EPOCH) // timedelta(microseconds=1)
MAX_EVENTS = 128
HEX = re.compile(r"[0-9a-fA-F]*")


@dataclass
class SpanIn:
    """One span, as stored in ``ReceivedSpan`` (ids in lower-case hex, times in
    Unix nanoseconds, attribute values as JSON values)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    parent_is_remote: bool | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    events: list[dict[str, Any]] = field(default_factory=list)
    # What mapping has read of the attributes (messages, by attribute names),
    # read once however often a trace asks. A copy made with other attributes
    # (``dataclasses.replace``) starts empty.
    read: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def started_at(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.start_ns // 1000)


@dataclass
class LogIn:
    """One OTLP log record with a span to belong to (ids in lower-case hex,
    times in Unix nanoseconds, body and attributes as JSON values). ``key``
    identifies it, so a re-sent record is stored once."""

    trace_id: str
    span_id: str
    event_name: str
    time_ns: int
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str

    @property
    def key(self) -> str:
        canonical = json.dumps(
            [self.span_id, self.event_name, self.time_ns, self.body, self.attributes],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def as_stored(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "span_id": self.span_id,
            "event_name": self.event_name,
            "time_ns": self.time_ns,
            "severity_text": self.severity_text,
            "body": self.body,
            "attributes": self.attributes,
            "resource": self.resource,
            "scope": self.scope,
        }


@dataclass
class Decoded:
    spans: list[SpanIn]
    rejected: int
    reasons: list[str]
    logs: list[LogIn] = field(default_factory=list)


def content_type_of(header: str) -> str:
    """``application/x-protobuf`` or ``application/json`` from a Content-Type
    header (parameters such as charset are ignored); anything else is a 400."""
    media_type = (header or "").split(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise ApiError(
            400,
            "unsupported_content_type",
            f"send OTLP as {PROTOBUF} or {JSON}; got '{media_type or 'no Content-Type'}'",
        )
    return CONTENT_TYPES[media_type]


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding (gzip, deflate or none). Inflating
    stops at ``limit`` bytes, so a small bomb never becomes a large allocation."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ApiError(400, "unsupported_encoding", f"Content-Encoding '{encoding}' is not gzip or deflate")
    # 16 + MAX_WBITS reads the gzip header; 32 + MAX_WBITS detects zlib or gzip.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else 32 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise too_large(limit)
        out += inflater.flush()
    except zlib.error as exc:
        raise ApiError(400, "malformed_body", f"the body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise too_large(limit)
    if not inflater.eof:
        raise ApiError(400, "malformed_body", f"the {encoding} data is truncated")
    return out


def too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"the decompressed body exceeds {limit:,} bytes")


SIGNALS = {
    "traces": (ExportTraceServiceRequest, ExportTraceServiceResponse, "resourceSpans"),
    "logs": (ExportLogsServiceRequest, ExportLogsServiceResponse, "resourceLogs"),
    "metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse, "resourceMetrics"),
}


def request_parse(body: bytes, content_type: str, signal: str = "traces"):
    """An OTLP export request of ``signal`` (``traces``, ``logs``, ``metrics``)
    from protobuf bytes or OTLP JSON."""
    message = SIGNALS[signal][0]()
    if content_type == JSON and signal == "metrics":
        # Kept nowhere: a JSON object is all it needs to be (exemplars' hex ids
        # would need converting for nothing).
        document = _json_document(body)
        if not isinstance(document, dict):
            raise ApiError(400, "malformed_body", "an OTLP JSON body is an object with 'resourceMetrics'")
        return message
    if content_type == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise ApiError(
                400, "malformed_body", f"the body is not an OTLP protobuf message: {exc}"
            ) from None
        return message
    document = _json_document(body)
    if not isinstance(document, dict):
        raise ApiError(400, "malformed_body", f"an OTLP JSON body is an object with '{SIGNALS[signal][2]}'")
    try:
        json_format.ParseDict(ids_as_base64(document), message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise ApiError(400, "malformed_body", f"the body is not an OTLP JSON document: {exc}") from None
    return message


def _json_document(body: bytes) -> Any:
    return json_body(body, code="malformed_body")


def _items(parent: dict, *names: str) -> list:
    for name in names:
        value = parent.get(name)
        if isinstance(value, list):
            return value
    return []


def ids_as_base64(document: dict) -> dict:
    """OTLP JSON writes trace and span ids in hex where protobuf's JSON mapping
    expects base64: convert them in place before parsing (spans, their links,
    log records; metric exemplars)."""
    for resource in [
        *_items(document, "resourceSpans", "resource_spans"),
        *_items(document, "resourceLogs", "resource_logs"),
    ]:
        if not isinstance(resource, dict):
            continue
        for scope in [
            *_items(resource, "scopeSpans", "scope_spans"),
            *_items(resource, "scopeLogs", "scope_logs"),
        ]:
            if not isinstance(scope, dict):
                continue
            for span in [*_items(scope, "spans"), *_items(scope, "logRecords", "log_records")]:
                if not isinstance(span, dict):
                    continue
                holders = [span, *(link for link in _items(span, "links") if isinstance(link, dict))]
                for holder in holders:
                    for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                        if key in holder:
                            holder[key] = _hex_to_base64(holder[key], key)
    return document


def _hex_to_base64(value: Any, key: str) -> str:
    if not isinstance(value, str) or not HEX.fullmatch(value) or len(value) % 2:
        raise ApiError(400, "malformed_body", f"{key} must be a hex string; got {str(value)[:40]!r}")
    return base64.b64encode(binascii.unhexlify(value)).decode()


REJECTED_FIELD = {
    "traces": "rejected_spans",
    "logs": "rejected_log_records",
    "metrics": "rejected_data_points",
}


def response_body(content_type: str, rejected: int, message: str, signal: str = "traces") -> bytes:
    """The export response of ``signal`` in the request's encoding; partial
    success when spans (or log records) were rejected."""
    response = SIGNALS[signal][1]()
    if rejected:
        setattr(response.partial_success, REJECTED_FIELD[signal], rejected)
        response.partial_success.error_message = message
    if content_type == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()


# --- from protobuf messages to plain spans -------------------------------------


def _clean(text: str) -> str:
    # PostgreSQL stores no NUL character, in text or in JSON.
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def any_value(value) -> Any:
    """An OTLP ``AnyValue`` as a JSON value (bytes as base64)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _clean(value.string_value)
    if kind in ("bool_value", "int_value"):
        return getattr(value, kind)
    if kind == "double_value":
        # JSON has no NaN or infinity.
        return value.double_value if math.isfinite(value.double_value) else str(value.double_value)
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes_of(key_values) -> dict[str, Any]:
    attributes = {}
    for kv in key_values:
        key = kv.key
        if "\x00" in key:
            key = _clean(key)
        value = kv.value
        # Strings, most attributes, without a call each: a non-empty string
        # value is the one the oneof holds.
        text = value.string_value
        if text:
            attributes[key] = _clean(text) if "\x00" in text else text
        else:
            attributes[key] = any_value(value)
    return attributes


def _latest_allowed() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


def _problem(
    trace_id: bytes, span_id: bytes, parent_id: bytes, start: int, end: int, latest_us: int
) -> str | None:
    """Why a span cannot be used, or None. ``latest_us``: the latest start allowed,
    in Unix microseconds (times are compared at the precision they are kept at)."""
    if len(trace_id) != 16 or not any(trace_id):
        return "trace_id must be 16 bytes, not all zero"
    if len(span_id) != 8 or not any(span_id):
        return "span_id must be 8 bytes, not all zero"
    if parent_id and len(parent_id) != 8:
        return "parent_span_id must be empty or 8 bytes"
    if not start or end < start:
        return "start_time_unix_nano must be set and not after end_time_unix_nano"
    if not EARLIEST_US <= start // 1000 <= latest_us:
        return "start time must be between 2000-01-01 and one day from now"
    return None


def _parent_is_remote(flags: int) -> bool | None:
    if not flags & SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK:
        return None
    return bool(flags & SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)


def spans_of(message: ExportTraceServiceRequest) -> Decoded:
    """Every usable span of the request; the others are counted with a reason.
    Each field of a span is read from the message once."""
    spans: list[SpanIn] = []
    rejected, reasons = 0, []
    latest_us = (_latest_allowed() - EPOCH) // timedelta(microseconds=1)
    for resource_spans in message.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = _clean(scope_spans.scope.name)[:200]
            for span in scope_spans.spans:
                trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                problem = _problem(trace_id, span_id, parent_id, start, end, latest_us)
                if problem is not None:
                    rejected += 1
                    if len(reasons) < 5:
                        reasons.append(f"span '{_clean(span.name)[:100]}': {problem}")
                    continue
                parent = parent_id.hex() if any(parent_id) else ""
                name = span.name
                if "\x00" in name:
                    name = _clean(name)
                status = span.status
                status_message = status.message
                if status_message and "\x00" in status_message:
                    status_message = _clean(status_message)
                events = span.events
                spans.append(
                    SpanIn(
                        trace_id.hex(),
                        span_id.hex(),
                        parent,
                        _parent_is_remote(span.flags) if parent else None,
                        name,
                        span.kind,
                        start,
                        end,
                        status.code,
                        status_message,
                        attributes_of(span.attributes),
                        resource,
                        scope,
                        [
                            {
                                "name": _clean(event.name),
                                "time_ns": event.time_unix_nano,
                                "attributes": attributes_of(event.attributes),
                            }
                            for event in events[:MAX_EVENTS]
                        ]
                        if events
                        else [],
                    )
                )
    return Decoded(spans=spans, rejected=rejected, reasons=reasons)


# Log records kept: the GenAI events, which carry an LLM call's messages.
KEPT_EVENT_PREFIX = "gen_ai."


def logs_of(message: ExportLogsServiceRequest) -> Decoded:
    """The log records that are GenAI events of a span (``event_name``, or the
    older ``event.name`` attribute, starting with ``gen_ai.``; trace and span id
    set). Other records are accepted and not kept; a GenAI event with an
    unusable trace or span id is rejected with a reason."""
    logs: list[LogIn] = []
    rejected, reasons = 0, []
    for resource_logs in message.resource_logs:
        resource = attributes_of(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = _clean(scope_logs.scope.name)[:200]
            for record in scope_logs.log_records:
                attributes = attributes_of(record.attributes)
                name = _clean(record.event_name) or attributes.get("event.name")
                if not isinstance(name, str) or not name.startswith(KEPT_EVENT_PREFIX):
                    continue
                if len(record.trace_id) != 16 or not any(record.trace_id):
                    problem = "trace_id must be 16 bytes, not all zero"
                elif len(record.span_id) != 8 or not any(record.span_id):
                    problem = "span_id must be 8 bytes, not all zero"
                else:
                    problem = None
                if problem is not None:
                    rejected += 1
                    if len(reasons) < 5:
                        reasons.append(f"log record '{name[:100]}': {problem}")
                    continue
                logs.append(
                    LogIn(
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        event_name=name,
                        time_ns=record.time_unix_nano or record.observed_time_unix_nano,
                        severity_text=_clean(record.severity_text),
                        body=any_value(record.body) if record.HasField("body") else None,
                        attributes=attributes,
                        resource=resource,
                        scope=scope,
                    )
                )
    return Decoded(spans=[], rejected=rejected, reasons=reasons, logs=logs)


def request_decode(
    *, body: bytes, content_type: str, content_encoding: str, signal: str = "traces"
) -> tuple[str, Decoded]:
    """The request's encoding (the answer uses it too) and its spans or log
    records (a metrics export is read, to answer a malformed one 400, and kept
    nowhere)."""
    encoding = content_type_of(content_type)
    raw = decompress(body, content_encoding, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    message = request_parse(raw, encoding, signal)
    if signal == "traces":
        return encoding, spans_of(message)
    if signal == "logs":
        return encoding, logs_of(message)
    return encoding, Decoded(spans=[], rejected=0, reasons=[])
