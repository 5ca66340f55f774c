from django.urls import path

from . import views

app_name = "agents"
urlpatterns = [
    path("agents/", views.agent_list, name="list"),
    path("agents/<str:agent_id>/", views.agent_detail, name="detail"),
    path("agents/<str:agent_id>/archive/", views.agent_archive, name="archive"),
    path("agents/<str:agent_id>/tools/", views.agent_tools, name="tools"),
    path("agents/<str:agent_id>/tools/<str:tool_name>/", views.tool_edit, name="tool_edit"),
    path("agents/<str:agent_id>/tools/<str:tool_name>/remove/", views.tool_remove, name="tool_remove"),
    path("agents/<str:agent_id>/deployments/", views.agent_deployments, name="deployments"),
    path(
        "agents/<str:agent_id>/deployments/<int:deployment_id>/rollback/",
        views.deployment_rollback,
        name="rollback",
    ),
    path("phone-numbers/", views.phone_numbers, name="phone_numbers"),
    path("phone-numbers/<int:phone_id>/release/", views.phone_number_release, name="phone_number_release"),
]
