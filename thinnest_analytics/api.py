"""The JSON API (django-ninja): routers, auth, and the error shape for every failure."""

import json
import logging
from decimal import Decimal

from django.core.exceptions import RequestDataTooBig
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer

from agents.schemas import NUL_MESSAGE, nul_paths

from .errors import ApiError, error_response

logger = logging.getLogger(__name__)


class _Encoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, Decimal):
            # Money leaves as a JSON number; ≤15 significant digits print exactly.
            return float(o)
        if hasattr(o, "isoformat"):
            return o.isoformat().replace("+00:00", "Z")
        return super().default(o)


class JsonRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request, data, *, response_status):
        return json.dumps(data, cls=_Encoder, ensure_ascii=False)


class StrictJsonParser(Parser):
    """JSON bodies of typed endpoints: UTF-8, no NaN/Infinity, and no NUL
    characters (PostgreSQL cannot store them), each a clear 400."""

    def parse_body(self, request: HttpRequest):
        body = request.body
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError:
            raise ApiError(400, "malformed_json", "the body is not UTF-8 encoded JSON") from None
        except ValueError as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        # JSON carries a NUL only escaped: one search of the raw body decides.
        if b"\\u0000" in body and (where := nul_paths(data)):
            raise ApiError(400, "invalid_request", "; ".join(f"{path}: {NUL_MESSAGE}" for path in where))
        return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


api = NinjaAPI(
    parser=StrictJsonParser(),
    title="thinnest analytics API",
    version="1.0",
    description="Analytics and monitoring for AI agents. Authenticate with `Authorization: Bearer <api key>`.",
    renderer=JsonRenderer(),
    urls_namespace="api",
)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError):
    response = error_response(exc.status, exc.code, exc.message, exc.details)
    for name, value in exc.headers.items():
        response[name] = value
    return response


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError):
    problems = []
    for err in exc.errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path")]
        problems.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    message = "; ".join(f"{p['field']}: {p['message']}" for p in problems) or "invalid request"
    return error_response(400, "invalid_request", message, problems)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError):
    response = error_response(
        401, "unauthenticated", "missing or unknown API key; send 'Authorization: Bearer <key>'"
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404):
    return error_response(404, "not_found", str(exc) or "not found")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError):
    if isinstance(exc.__cause__, ApiError):  # the body parser's own answer, kept whole
        return _api_error(request, exc.__cause__)
    return error_response(exc.status_code, "error", str(exc))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig):
    from django.conf import settings

    return error_response(
        413,
        "request_too_large",
        f"the request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes",
    )


@api.exception_handler(DataError)
def _out_of_range(request: HttpRequest, exc: DataError):
    """A value the validators let through but the database cannot hold."""
    logger.warning("value refused by the database: %s", exc)
    return error_response(
        400, "invalid_request", "a value in the request is out of the range the database accepts"
    )


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_unavailable(request: HttpRequest, exc: Exception):
    logger.warning("database unavailable: %s", exc)
    response = error_response(503, "database_unavailable", "the database is unavailable; retry shortly")
    response["Retry-After"] = "5"
    return response


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception):
    logger.exception("unhandled API error")
    return error_response(500, "internal_error", "an unexpected error occurred")


from agents.api import router as agents_router  # noqa: E402
from agents.voice_api import router as voice_router  # noqa: E402
from alerts.api import router as alerts_router  # noqa: E402
from audit.api import router as audit_router  # noqa: E402
from billing.api import router as billing_router  # noqa: E402
from dashboard.api import router as analytics_router  # noqa: E402
from otel.api import router as otel_router  # noqa: E402

api.add_router("", agents_router)
api.add_router("", analytics_router)
api.add_router("", audit_router)
api.add_router("", alerts_router)
api.add_router("", otel_router)
api.add_router("", billing_router)
api.add_router("", voice_router)
