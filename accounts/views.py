from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from audit.services import Actor

from .access import member_required
from .middleware import SESSION_KEY
from .models import ApiKey, Role
from .services import InvalidScopes, api_key_create, api_key_revoke


@member_required(Role.ADMIN)
def api_keys(request: HttpRequest) -> HttpResponse:
    created = None
    if request.method == "POST":
        try:
            created = api_key_create(
                organisation=request.organisation,
                name=request.POST.get("name", ""),
                scopes=request.POST.getlist("scopes"),
                actor=Actor.for_user(request.user, request),
            )
        except (InvalidScopes, ValueError) as exc:
            messages.error(request, str(exc))
    keys = ApiKey.objects.filter(organisation=request.organisation)
    return render(request, "accounts/api_keys.html", {"keys": keys, "created": created})


@require_POST
@member_required(Role.ADMIN)
def api_key_revoke_view(request: HttpRequest, prefix: str) -> HttpResponse:
    api_key = ApiKey.objects.filter(organisation=request.organisation, prefix=prefix).first()
    if api_key is None:
        raise Http404("no such key")
    api_key_revoke(api_key=api_key, actor=Actor.for_user(request.user, request))
    messages.success(request, f"Key {api_key.name} revoked.")
    return redirect("accounts:api_keys")


@require_POST
@member_required(Role.VIEWER)
def organisation_switch(request: HttpRequest) -> HttpResponse:
    wanted = request.POST.get("organisation", "")
    membership = next((m for m in request.memberships if str(m.organisation_id) == wanted), None)
    if membership is None:
        raise Http404("not a member of that organisation")
    request.session[SESSION_KEY] = membership.organisation_id
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return redirect(target)
