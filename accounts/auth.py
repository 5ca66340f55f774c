"""API key authentication for the JSON API, one callable per scope."""

from django.conf import settings
from django.http import HttpRequest
from ninja.security import HttpBearer

from thinnest_analytics.errors import ApiError

from .models import ApiKey, Scope
from .ratelimit import key_request_allowed
from .services import api_key_authenticate


class ApiKeyAuth(HttpBearer):
    """``Authorization: Bearer <key>``; the key must carry ``scope``."""

    def __init__(self, scope: str):
        self.scope = Scope(scope)
        super().__init__()

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        api_key = api_key_authenticate(token.strip())
        if api_key is None:
            return None
        if self.scope not in api_key.scopes:
            raise ApiError(
                403,
                "insufficient_scope",
                f"this API key lacks the '{self.scope}' scope",
                {"required_scope": self.scope.value, "key_scopes": api_key.scopes},
            )
        if self.scope == Scope.INGEST:
            allowed, retry_after = key_request_allowed(prefix=api_key.prefix, bucket="ingest")
            if not allowed:
                raise ApiError(
                    429,
                    "rate_limited",
                    f"this API key sent more than {settings.INGEST_REQUESTS_PER_MINUTE} ingestion requests this minute; "
                    f"retry in {retry_after} s",
                    {"retry_after_seconds": retry_after},
                    headers={"Retry-After": str(retry_after)},
                )
        request.organisation = api_key.organisation
        return api_key


read_key = ApiKeyAuth(Scope.READ)
ingest_key = ApiKeyAuth(Scope.INGEST)
admin_key = ApiKeyAuth(Scope.ADMIN)
