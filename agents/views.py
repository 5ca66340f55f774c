"""Pages that manage agents, their tools, deployments and phone numbers.

Each view parses a form, calls one service and redirects; a refusal from the
service is shown on the page. Who may do what is decided by
``member_required``: viewers read, members change agents, tools and phone
numbers, admins deploy and roll back.
"""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.access import member_required
from accounts.models import Role
from audit.services import Actor
from thinnest_analytics.pages import button_apply, form_apply, or_404

from . import deployments, selectors, services
from . import phone_numbers as phone_number_services
from .config import config_masked, config_of
from .forms import (
    AgentCreateForm,
    AgentForm,
    DeploymentForm,
    PhoneNumberAssignForm,
    ToolForm,
    ToolSettingsForm,
)
from .models import Agent, DeploymentStatus


def _agent(request: HttpRequest, agent_id: str) -> Agent:
    """The current organisation's agent, or 404 (also for another organisation's)."""
    return or_404(selectors.agent_get, organisation=request.organisation, public_id=agent_id)


# --- agents -------------------------------------------------------------------


def _agent_list_page(request: HttpRequest, form: AgentCreateForm, status: int = 200) -> HttpResponse:
    agents = selectors.agent_list_for_page(organisation=request.organisation)
    context = {"agents": agents, "form": form, "nav": "agents"}
    return render(request, "agents/list.html", context, status=status)


@member_required(to_post=Role.MEMBER)
def agent_list(request: HttpRequest) -> HttpResponse:
    """The organisation's agents; members create new ones here."""
    if request.method != "POST":
        return _agent_list_page(request, AgentCreateForm())
    form = AgentCreateForm(request.POST)
    agent = form_apply(
        form,
        lambda data: services.agent_create(
            organisation=request.organisation,
            actor=Actor.for_request(request),
            name=data["name"],
            config=form.config(),
            public_id=data["id"] or None,
        ),
    )
    if agent is None:
        return _agent_list_page(request, form, status=400)
    messages.success(request, f"Agent {agent.name} created.")
    return redirect("agents:detail", agent.public_id)


def _agent_page(request: HttpRequest, agent: Agent, form: AgentForm | None = None, status: int = 200):
    config = config_of(agent)
    if form is None:
        form = AgentForm(initial={"name": agent.name, **config})
    context = {
        "agent": agent,
        "config": config,
        "form": form,
        "phone_numbers": selectors.agent_phone_numbers(agent=agent),
        "active": selectors.active_deployment(agent=agent),
        "nav": "agents",
        "tab": "settings",
    }
    return render(request, "agents/detail.html", context, status=status)


@member_required(to_post=Role.MEMBER)
def agent_detail(request: HttpRequest, agent_id: str) -> HttpResponse:
    """The agent's settings; members change them here."""
    agent = _agent(request, agent_id)
    if request.method != "POST":
        return _agent_page(request, agent)
    form = AgentForm(request.POST)
    changed = form_apply(
        form,
        lambda data: services.agent_update(
            agent=agent, actor=Actor.for_request(request), name=data["name"], config=form.config()
        ),
    )
    if changed is None:
        return _agent_page(request, agent, form, status=400)
    messages.success(request, "Saved.")
    return redirect("agents:detail", agent.public_id)


@require_POST
@member_required(Role.MEMBER)
def agent_archive(request: HttpRequest, agent_id: str) -> HttpResponse:
    agent = _agent(request, agent_id)
    button_apply(
        request,
        lambda: services.agent_archive(agent=agent, actor=Actor.for_request(request)),
        f"Agent {agent.name} archived.",
    )
    return redirect("agents:detail", agent.public_id)


# --- tools --------------------------------------------------------------------


def _tools_page(request: HttpRequest, agent: Agent, form: ToolForm | None = None, status: int = 200):
    context = {
        "agent": agent,
        "tools": config_masked(config_of(agent), all_settings=request.membership.has_role(Role.MEMBER))[
            "tools"
        ],
        "form": form or ToolForm(),
        "nav": "agents",
        "tab": "tools",
    }
    return render(request, "agents/tools.html", context, status=status)


@member_required(to_post=Role.MEMBER)
def agent_tools(request: HttpRequest, agent_id: str) -> HttpResponse:
    """The agent's tools, secrets masked (for viewers every setting the tool does
    not make public); members add tools here."""
    agent = _agent(request, agent_id)
    if request.method != "POST":
        return _tools_page(request, agent)
    form = ToolForm(request.POST)
    added = form_apply(
        form,
        lambda data: services.agent_tool_save(
            agent=agent,
            actor=Actor.for_request(request),
            name=data["name"],
            config=data["config"],
            create=True,
            public_settings=data["public_settings"],
        ),
    )
    if added is None:
        return _tools_page(request, agent, form, status=400)
    messages.success(request, f"Tool {form.cleaned_data['name']} added.")
    return redirect("agents:tools", agent.public_id)


@member_required(Role.MEMBER)
def tool_edit(request: HttpRequest, agent_id: str, tool_name: str) -> HttpResponse:
    """One tool's settings, secrets masked; saving keeps masks that were left alone."""
    agent = _agent(request, agent_id)
    tool = next((t for t in config_of(agent)["tools"] if t["name"] == tool_name), None)
    if tool is None:
        raise Http404("no such tool")
    form = ToolSettingsForm(
        initial={"config": tool["config"], "public_settings": ", ".join(tool.get("public_settings", []))}
    )
    status = 200
    if request.method == "POST":
        form = ToolSettingsForm(request.POST)
        saved = form_apply(
            form,
            lambda data: services.agent_tool_save(
                agent=agent,
                actor=Actor.for_request(request),
                name=tool_name,
                config=data["config"],
                create=False,
                public_settings=data["public_settings"],
            ),
        )
        if saved is not None:
            messages.success(request, f"Settings of {tool_name} saved.")
            return redirect("agents:tools", agent.public_id)
        status = 400
    context = {"agent": agent, "tool": tool, "form": form, "nav": "agents", "tab": "tools"}
    return render(request, "agents/tool_edit.html", context, status=status)


@require_POST
@member_required(Role.MEMBER)
def tool_remove(request: HttpRequest, agent_id: str, tool_name: str) -> HttpResponse:
    agent = _agent(request, agent_id)
    button_apply(
        request,
        lambda: services.agent_tool_remove(agent=agent, actor=Actor.for_request(request), name=tool_name),
        f"Tool {tool_name} removed.",
    )
    return redirect("agents:tools", agent.public_id)


# --- deployments --------------------------------------------------------------


def _deployments_page(
    request: HttpRequest, agent: Agent, form: DeploymentForm | None = None, status: int = 200
) -> HttpResponse:
    deployments = selectors.deployment_history(agent=agent)
    active = next((d for d in deployments if d.status == DeploymentStatus.ACTIVE), None)
    context = {
        "agent": agent,
        "deployments": deployments,
        # Rolling back to these would change nothing: their configuration is active.
        "already_active": {active.pk, active.rollback_of_id} if active else set(),
        "form": form or DeploymentForm(),
        "nav": "agents",
        "tab": "deployments",
    }
    return render(request, "agents/deployments.html", context, status=status)


@member_required(to_post=Role.ADMIN)
def agent_deployments(request: HttpRequest, agent_id: str) -> HttpResponse:
    """The Deployments tab: history for everyone; admins deploy the current
    configuration here and roll back from it."""
    agent = _agent(request, agent_id)
    if request.method != "POST":
        return _deployments_page(request, agent)
    form = DeploymentForm(request.POST)
    deployment = form_apply(
        form,
        lambda data: deployments.deployment_create(
            agent=agent,
            actor=Actor.for_request(request),
            version=data["version"] or None,
            changes=data["changes"],
        ),
    )
    if deployment is None:
        return _deployments_page(request, agent, form, status=400)
    messages.success(request, f"Deployment {deployment.version} recorded; it is now active.")
    return redirect("agents:deployments", agent.public_id)


@member_required(Role.ADMIN)
def deployment_rollback(request: HttpRequest, agent_id: str, deployment_id: int) -> HttpResponse:
    """GET asks for confirmation, showing what will change; POST rolls back."""
    agent = _agent(request, agent_id)
    target = or_404(selectors.deployment_get, agent=agent, deployment_id=deployment_id)
    if request.method == "POST":
        button_apply(
            request,
            lambda: deployments.deployment_rollback(
                agent=agent, version_id=target.pk, actor=Actor.for_request(request)
            ),
            f"Rolled back to {target.version}: its configuration is active again.",
        )
        return redirect("agents:deployments", agent.public_id)
    context = {
        "agent": agent,
        "target": target,
        **selectors.rollback_preview(agent=agent, deployment=target),
        "nav": "agents",
        "tab": "deployments",
    }
    return render(request, "agents/rollback_confirm.html", context)


# --- phone numbers --------------------------------------------------------------


@member_required(to_post=Role.MEMBER)
def phone_numbers(request: HttpRequest) -> HttpResponse:
    """The organisation's numbers and who answers them; members assign here."""
    choices = selectors.agent_choices(organisation=request.organisation)
    form = PhoneNumberAssignForm(request.POST or None, agent_choices=choices)
    status = 200
    if request.method == "POST":
        phone = form_apply(
            form,
            lambda data: phone_number_services.phone_number_assign(
                organisation=request.organisation,
                number=data["number"],
                agent=selectors.agent_get(organisation=request.organisation, public_id=data["agent"]),
                actor=Actor.for_request(request),
            ),
        )
        if phone is not None:
            messages.success(request, f"{phone.number} is answered by {phone.agent.name}.")
            return redirect("agents:phone_numbers")
        status = 400
    context = {
        "numbers": selectors.phone_number_list(organisation=request.organisation),
        "form": form,
        "nav": "phone_numbers",
    }
    return render(request, "agents/phone_numbers.html", context, status=status)


@require_POST
@member_required(Role.MEMBER)
def phone_number_release(request: HttpRequest, phone_id: int) -> HttpResponse:
    phone = or_404(selectors.phone_number_get, organisation=request.organisation, phone_id=phone_id)
    button_apply(
        request,
        lambda: phone_number_services.phone_number_release(
            phone_number=phone, actor=Actor.for_request(request)
        ),
        f"{phone.number} released.",
    )
    return redirect("agents:phone_numbers")
