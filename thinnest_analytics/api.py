"""The JSON API (django-ninja): routers, auth, and the error shape for every failure."""

import json
import logging
from decimal import Decimal

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.renderers import BaseRenderer

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


api = NinjaAPI(
    title="thinnest analytics API",
    version="1.0",
    description="Analytics and monitoring for AI agents. Authenticate with `Authorization: Bearer <api key>`.",
    renderer=JsonRenderer(),
    urls_namespace="api",
)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.details)


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
    return error_response(exc.status_code, "error", str(exc))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig):
    from django.conf import settings

    return error_response(
        413,
        "request_too_large",
        f"the request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes",
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
from audit.api import router as audit_router  # noqa: E402
from dashboard.api import router as analytics_router  # noqa: E402

api.add_router("", agents_router)
api.add_router("", analytics_router)
api.add_router("", audit_router)
api.add_router("", voice_router)
