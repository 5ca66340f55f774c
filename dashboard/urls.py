from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("agents/<str:agent_id>/performance/", views.agent_performance, name="agent_performance"),
    path("agents/<str:agent_id>/compare/", views.agent_compare, name="agent_compare"),
    path("agents/<str:agent_id>/voice/", views.agent_voice, name="agent_voice"),
    path("conversations/", views.conversations, name="conversations"),
    path("conversations/<str:session_id>/", views.conversation_detail, name="conversation"),
    path("traces/", views.traces, name="traces"),
    path("traces/<str:trace_id>/", views.trace_detail, name="trace"),
    path("settings/", views.settings_page, name="settings"),
    path("audit/", views.audit_log, name="audit"),
]
