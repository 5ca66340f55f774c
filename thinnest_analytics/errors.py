"""The JSON API's one error shape: ``{"error": {"code", "message", "details"}}``."""

from typing import Any

from django.http import JsonResponse


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: Any = None) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "details": details}}, status=status)


def not_found(what: str) -> ApiError:
    """Unknown and other organisations' objects look the same: not found."""
    return ApiError(404, "not_found", f"{what} not found")
