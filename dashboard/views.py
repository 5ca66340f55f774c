from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.access import member_required
from agents import selectors as agent_selectors
from agents.models import Agent
from thinnest_analytics.errors import ApiError


@member_required()
def overview(request: HttpRequest) -> HttpResponse:
    organisation = request.organisation
    context = {
        "agents": Agent.objects.filter(organisation=organisation, archived_at__isnull=True),
        "recent_traces": agent_selectors.recent_traces(organisation=organisation),
        "api_base": request.build_absolute_uri("/api"),
        "site_url": settings.SITE_URL,
    }
    return render(request, "dashboard/overview.html", context)


@member_required()
def trace_detail(request: HttpRequest, trace_id: str) -> HttpResponse:
    try:
        trace = agent_selectors.trace_get(organisation=request.organisation, public_id=trace_id)
    except ApiError:
        raise Http404("no such trace") from None
    return render(
        request,
        "dashboard/trace.html",
        {"trace": trace, "steps": trace.steps.all(), "scores": trace.scores.all()},
    )
