from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from accounts.views import PausedLoginView

from .api import api


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and the smoke test."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})


urlpatterns = [
    path("api/", api.urls),
    path("admin/", admin.site.urls),
    path("login/", PausedLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", healthz, name="healthz"),
    path("", include("accounts.urls")),
    path("", include("agents.urls")),
    path("", include("billing.urls")),
    path("", include("dashboard.urls")),
    path("", include("alerts.urls")),
]
