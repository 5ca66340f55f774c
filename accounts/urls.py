from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("settings/api-keys/", views.api_keys, name="api_keys"),
    path("settings/api-keys/<str:prefix>/revoke/", views.api_key_revoke_view, name="api_key_revoke"),
    path("settings/team/", views.team, name="team"),
    path("settings/team/<int:membership_id>/role/", views.member_role, name="member_role"),
    path("settings/team/<int:membership_id>/remove/", views.member_remove_view, name="member_remove"),
    path(
        "settings/team/invitations/<int:invitation_id>/cancel/",
        views.invitation_cancel_view,
        name="invitation_cancel",
    ),
    path("invitations/", views.invitations, name="invitations"),
    path("invitations/<int:invitation_id>/join/", views.invitation_join_view, name="invitation_join"),
    path(
        "invitations/<int:invitation_id>/decline/", views.invitation_decline_view, name="invitation_decline"
    ),
    path("invitation/<uidb64>/<token>/", views.invitation_accept, name="invitation_accept"),
    path("organisation/switch/", views.organisation_switch, name="organisation_switch"),
]
