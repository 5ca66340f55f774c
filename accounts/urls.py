from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("settings/api-keys/", views.api_keys, name="api_keys"),
    path("settings/api-keys/<str:prefix>/revoke/", views.api_key_revoke_view, name="api_key_revoke"),
    path("organisation/switch/", views.organisation_switch, name="organisation_switch"),
]
