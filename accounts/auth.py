"""API key authentication for the JSON API, one callable per scope."""

from django.http import HttpRequest
from ninja.security import HttpBearer

from thinnest_analytics.errors import ApiError

from .models import ApiKey, Scope
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
        request.organisation = api_key.organisation
        return api_key


read_key = ApiKeyAuth(Scope.READ)
ingest_key = ApiKeyAuth(Scope.INGEST)
admin_key = ApiKeyAuth(Scope.ADMIN)
