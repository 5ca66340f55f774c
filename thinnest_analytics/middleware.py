from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import MiddlewareNotUsed
from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.deprecation import MiddlewareMixin

from .errors import ApiError
from .replica import REPLICA, replica_lag_header, replica_pin, replica_pin_wanted


class RejectNulMiddleware(MiddlewareMixin):
    """A NUL character in a URL path or query value is never meaningful and
    PostgreSQL cannot compare with it: answer 400 before any view runs."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if "\x00" not in request.path and not any(
            "\x00" in v for _, values in request.GET.lists() for v in values
        ):
            return None
        message = "NUL characters are not allowed in URLs"
        if request.path.startswith("/api/"):
            return JsonResponse(
                {"error": {"code": "invalid_request", "message": message, "details": None}}, status=400
            )
        return HttpResponse(message, status=400, content_type="text/plain")


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Answer 503 with Retry-After when the database cannot be reached.

    The JSON API has its own handler with the same answer; this one covers the
    HTML pages so an outage never shows a stack trace.
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(
                {
                    "error": {
                        "code": "database_unavailable",
                        "message": "The database is unavailable; retry shortly.",
                        "details": None,
                    }
                },
                status=503,
            )
        else:
            response = HttpResponse(
                "The database is unavailable; retry shortly.", status=503, content_type="text/plain"
            )
        response["Retry-After"] = "5"
        return response


class PageErrorMiddleware(MiddlewareMixin):
    """A refusal (``ApiError``) that escapes an HTML page — a cursor the page
    never handed out, say — is the visitor's bad input, not a server error:
    answer its status with a page that says what was wrong and how to go on.
    The JSON API answers its own errors before they get here."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, ApiError) or request.path.startswith("/api/"):
            return None
        context = {"status": exception.status, "message": exception.message, "path": request.path}
        return render(request, "page_error.html", context, status=exception.status)


class ApiJsonErrorsMiddleware(MiddlewareMixin):
    """Under ``/api/`` an unknown path (404) or a method a path does not take
    (405) answers the API's JSON error shape, never Django's HTML page: OTLP
    exporters and scripts read the body."""

    ANSWERS = {
        404: ("not_found", "no API endpoint at this path"),
        405: ("method_not_allowed", "this API endpoint does not take this method"),
    }

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            response.status_code not in self.ANSWERS
            or not request.path.startswith("/api/")
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        code, message = self.ANSWERS[response.status_code]
        answer = JsonResponse(
            {
                "error": {
                    "code": code,
                    "message": f"{message}: {request.method} {request.path}",
                    "details": None,
                }
            },
            status=response.status_code,
        )
        if response.has_header("Allow"):
            answer["Allow"] = response["Allow"]
        return answer


class ReplicaMiddleware:
    """With a read replica: the answer of a page or endpoint that read it says
    how far behind it is (``X-Replica-Lag-Seconds``), and a browser that changed
    something reads the primary until the replica has the change
    (``thinnest_analytics.replica``). Not installed without a replica; in async
    mode an API request passes without a hop to a thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        if REPLICA not in connections.settings:
            raise MiddlewareNotUsed
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        response = self.get_response(request)
        replica_lag_header(request, response)
        if replica_pin_wanted(request, response):
            replica_pin(response)
        return response

    async def __acall__(self, request: HttpRequest):
        response = await self.get_response(request)
        replica_lag_header(request, response)
        if replica_pin_wanted(request, response):
            await sync_to_async(replica_pin)(response)
        return response
