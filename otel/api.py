"""OTLP/HTTP ingestion: ``POST /api/otel/v1/traces``, ``/v1/logs`` (GenAI
events) and ``/v1/metrics`` (accepted, not kept), so that
``OTEL_EXPORTER_OTLP_ENDPOINT=<server>/api/otel`` works with the official
exporters unchanged; and a trace's received spans read back."""

import logging
import threading

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Router

from accounts.auth import ingest_key, read_key
from audit.services import Actor
from thinnest_analytics.db import in_worker_thread, on_worker_thread
from thinnest_analytics.errors import error_response
from thinnest_analytics.replica import replica_reads

from . import selectors
from .otlp import JSON, PROTOBUF, request_decode, response_body
from .services import logs_ingest, spans_ingest

logger = logging.getLogger(__name__)
router = Router(tags=["opentelemetry"])
RETRY_AFTER_SECONDS = 2


class RequestSlots:
    """A bound on the OTLP requests one process serves at once. A request over
    the bound is answered at once with 503 and Retry-After, which exporters
    retry later, instead of queueing up behind the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.busy = 0

    def take(self) -> bool:
        with self._lock:
            if self.busy >= settings.OTEL_MAX_CONCURRENT_REQUESTS:
                return False
            self.busy += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.busy -= 1


slots = RequestSlots()

_ANY_VALUE = {
    "type": "object",
    "description": "OTLP AnyValue: stringValue, intValue, doubleValue, boolValue, …",
}
_JSON_REQUEST = {
    "type": "object",
    "description": "OTLP JSON (ExportTraceServiceRequest): ids in hex, int64 as strings or numbers, enums as integers",
    "properties": {
        "resourceSpans": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "resource": {"type": "object", "properties": {"attributes": {"type": "array"}}},
                    "scopeSpans": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "scope": {"type": "object"},
                                "spans": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "traceId": {
                                                "type": "string",
                                                "example": "5b8efff798038103d269b633813fc60c",
                                            },
                                            "spanId": {"type": "string", "example": "eee19b7ec3c1b174"},
                                            "parentSpanId": {"type": "string"},
                                            "name": {
                                                "type": "string",
                                                "example": "invoke_agent Support Agent",
                                            },
                                            "kind": {"type": "integer"},
                                            "startTimeUnixNano": {"type": "string"},
                                            "endTimeUnixNano": {"type": "string"},
                                            "attributes": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "properties": {
                                                        "key": {"type": "string"},
                                                        "value": _ANY_VALUE,
                                                    },
                                                },
                                            },
                                            "status": {"type": "object"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}
_JSON_RESPONSE = {
    "type": "object",
    "description": "ExportTraceServiceResponse; partialSuccess when spans were rejected",
    "properties": {
        "partialSuccess": {
            "type": "object",
            "properties": {"rejectedSpans": {"type": "string"}, "errorMessage": {"type": "string"}},
        }
    },
}
_PROTOBUF = {"type": "string", "format": "binary"}


@router.post(
    "/otel/v1/traces",
    auth=ingest_key,
    summary="Ingest OpenTelemetry spans (OTLP/HTTP, protobuf or JSON)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                PROTOBUF: {"schema": {**_PROTOBUF, "description": "ExportTraceServiceRequest"}},
                JSON: {"schema": _JSON_REQUEST},
            },
        },
        "parameters": [
            {
                "name": "Content-Encoding",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "enum": ["gzip", "deflate", "identity"]},
            }
        ],
        "responses": {
            200: {
                "description": "Stored; rejected spans, if any, are counted in partialSuccess",
                "content": {
                    PROTOBUF: {"schema": {**_PROTOBUF, "description": "ExportTraceServiceResponse"}},
                    JSON: {"schema": _JSON_RESPONSE},
                },
            },
            400: {"description": "The body cannot be read (content type, encoding, protobuf or JSON)"},
            413: {"description": "The body, or the body once decompressed, is over MAX_REQUEST_BYTES"},
            503: {
                "description": "Too many OTLP requests at once, or the database is unavailable; see Retry-After"
            },
        },
    },
)
async def otel_traces(request: HttpRequest):
    """Spans of one trace may come in several requests and in any order; a
    re-sent span is never counted twice. Answers in the request's encoding."""
    return await _export(request, "traces")


_ENCODING_HEADER = [
    {
        "name": "Content-Encoding",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "enum": ["gzip", "deflate", "identity"]},
    }
]


def _export_openapi(request_name: str, response_name: str) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {
                PROTOBUF: {"schema": {**_PROTOBUF, "description": request_name}},
                JSON: {"schema": {"type": "object", "description": f"{request_name} in OTLP JSON"}},
            },
        },
        "parameters": _ENCODING_HEADER,
        "responses": {
            200: {
                "description": "Accepted",
                "content": {
                    PROTOBUF: {"schema": {**_PROTOBUF, "description": response_name}},
                    JSON: {"schema": {"type": "object", "description": response_name}},
                },
            },
            400: {"description": "The body cannot be read (content type, encoding, protobuf or JSON)"},
            413: {"description": "The body, or the body once decompressed, is over MAX_REQUEST_BYTES"},
            503: {"description": "Too many OTLP requests at once, or the database is unavailable"},
        },
    }


@router.post(
    "/otel/v1/logs",
    auth=ingest_key,
    summary="Ingest GenAI events sent as OpenTelemetry log records (OTLP/HTTP)",
    openapi_extra=_export_openapi("ExportLogsServiceRequest", "ExportLogsServiceResponse"),
)
async def otel_logs(request: HttpRequest):
    """Log records that are GenAI events (``gen_ai.user.message``,
    ``gen_ai.choice``, ``gen_ai.client.inference.operation.details``, …) are
    kept with their trace and read as events of their span, whether they come
    before or after it; other log records are accepted and not kept."""
    return await _export(request, "logs")


@router.post(
    "/otel/v1/metrics",
    auth=ingest_key,
    summary="Accept OpenTelemetry metrics (OTLP/HTTP) without keeping them",
    openapi_extra=_export_openapi("ExportMetricsServiceRequest", "ExportMetricsServiceResponse"),
)
async def otel_metrics(request: HttpRequest):
    """Instrumentations that export metrics beside their spans get a success
    answer; the numbers are derived from the spans instead, so nothing is kept."""
    return await _export(request, "metrics")


async def _export(request: HttpRequest, signal: str):
    if not slots.take():
        response = error_response(
            503, "overloaded", "too many OpenTelemetry exports at once; retry after a moment"
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    try:
        return await in_worker_thread(_otel_export, request=request, signal=signal)
    finally:
        slots.give_back()


def _otel_export(request: HttpRequest, signal: str) -> HttpResponse:
    encoding, decoded = request_decode(
        body=request.body,
        content_type=request.headers.get("Content-Type", ""),
        content_encoding=request.headers.get("Content-Encoding", ""),
        signal=signal,
    )
    actor = Actor.for_request(request)
    if signal == "traces":
        result = spans_ingest(organisation=request.organisation, spans=decoded.spans, actor=actor)
    else:
        result = logs_ingest(organisation=request.organisation, records=decoded.logs, actor=actor)
    rejected = decoded.rejected + result.rejected
    message = ""
    if rejected:
        what = "spans" if signal == "traces" else "log records"
        reasons = "; ".join([*decoded.reasons, *result.reasons])
        message = f"{rejected} of {rejected + result.accepted} {what} rejected: {reasons}"
        logger.info("OTLP export partly rejected: %s", message)
    return HttpResponse(response_body(encoding, rejected, message, signal), content_type=encoding)


@router.get(
    "/traces/{trace_id}/spans",
    auth=read_key,
    summary="The OpenTelemetry spans and GenAI log records a trace was derived from, as received",
)
@on_worker_thread
@replica_reads
def trace_spans(request: HttpRequest, trace_id: str):
    """Every received span of the trace (``otel-<trace id>``) with all its
    attributes, events and resource, in start order, and the GenAI events that
    came as log records. 404 for a trace that did not come over OTLP."""
    return selectors.received_spans(organisation=request.organisation, public_id=trace_id)
