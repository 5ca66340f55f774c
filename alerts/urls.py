from django.urls import path

from . import views

app_name = "alerts"
urlpatterns = [
    path("alerts/", views.alert_rules, name="rules"),
    path("alerts/<int:rule_id>/edit/", views.alert_rule_edit, name="edit"),
    path("alerts/<int:rule_id>/mute/", views.alert_rule_mute, name="mute"),
    path("alerts/<int:rule_id>/delete/", views.alert_rule_delete, name="delete"),
    path("alerts/<int:rule_id>/test/", views.alert_rule_test, name="test"),
]
