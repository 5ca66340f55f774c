from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("traces/<str:trace_id>/", views.trace_detail, name="trace"),
]
