from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse


class DatabaseUnavailableMiddleware:
    """Answer 503 with Retry-After when the database cannot be reached.

    The JSON API has its own handler with the same answer; this one covers the
    HTML pages so an outage never shows a stack trace.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, (OperationalError, InterfaceError)):
            if request.path.startswith("/api/"):
                response = JsonResponse(
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
        return None
