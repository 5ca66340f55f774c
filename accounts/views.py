from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import LoginView
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from audit.services import Actor
from thinnest_analytics.pages import button_apply, form_apply, or_404

from .access import member_required, signed_in_required
from .admin_site import paused_login_status
from .forms import InviteForm, LoginForm
from .middleware import SESSION_KEY
from .models import Membership, Role
from .selectors import (
    api_key_get,
    api_key_list,
    invitation_for,
    invitations_for,
    membership_get,
    team_invitations,
    team_members,
)
from .services import (
    InvalidScopes,
    api_key_create,
    api_key_revoke,
    invitation_cancel,
    invitation_decline,
    invitation_join,
    invitations_accept_all,
    member_invite,
    member_remove,
    member_role_change,
)


@member_required(Role.ADMIN)
def api_keys(request: HttpRequest) -> HttpResponse:
    created = None
    if request.method == "POST":
        try:
            created = api_key_create(
                organisation=request.organisation,
                name=request.POST.get("name", ""),
                scopes=request.POST.getlist("scopes"),
                actor=Actor.for_request(request),
            )
        except (InvalidScopes, ValueError) as exc:
            messages.error(request, str(exc))
    keys = api_key_list(organisation=request.organisation)
    return render(request, "accounts/api_keys.html", {"keys": keys, "created": created})


@require_POST
@member_required(Role.ADMIN)
def api_key_revoke_view(request: HttpRequest, prefix: str) -> HttpResponse:
    api_key = or_404(api_key_get, organisation=request.organisation, prefix=prefix)
    api_key_revoke(api_key=api_key, actor=Actor.for_request(request))
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


# --- team -------------------------------------------------------------------


def _team_page(request: HttpRequest, form: InviteForm | None = None, status: int = 200) -> HttpResponse:
    context = {
        "members": team_members(organisation=request.organisation),
        "invitations": team_invitations(request.organisation),
        "form": form or InviteForm(),
        "roles": Role.choices,
        "nav": "team",
    }
    return render(request, "accounts/team.html", context, status=status)


@member_required(Role.ADMIN)
def team(request: HttpRequest) -> HttpResponse:
    """The organisation's members and pending invitations; invitations go out
    from here. The answer is the same whether or not the address has an account."""
    if request.method != "POST":
        return _team_page(request)
    form = InviteForm(request.POST)
    invited = form_apply(
        form,
        lambda data: member_invite(
            organisation=request.organisation,
            email=data["email"],
            role=data["role"],
            by=request.membership,
            actor=Actor.for_request(request),
        ),
    )
    if invited is None:
        return _team_page(request, form, status=400)
    messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
    return redirect("accounts:team")


def _membership(request: HttpRequest, membership_id: int) -> Membership:
    return or_404(membership_get, organisation=request.organisation, membership_id=membership_id)


@require_POST
@member_required(Role.ADMIN)
def invitation_cancel_view(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = next((i for i in team_invitations(request.organisation) if i.pk == invitation_id), None)
    if invitation is None:
        raise Http404("no such invitation")
    button_apply(
        request,
        lambda: invitation_cancel(
            invitation=invitation, by=request.membership, actor=Actor.for_request(request)
        ),
        f"The invitation to {invitation.email} was cancelled.",
    )
    return redirect("accounts:team")


# --- the invitee ------------------------------------------------------------


@signed_in_required
def invitations(request: HttpRequest) -> HttpResponse:
    """The invitations waiting for the signed-in person, to accept or decline."""
    return render(request, "accounts/invitations.html", {"invitations": invitations_for(request.user)})


def _invitation(request: HttpRequest, invitation_id: int):
    invitation = invitation_for(request.user, invitation_id)
    if invitation is None:
        raise Http404("no such invitation")
    return invitation


@require_POST
@signed_in_required
def invitation_join_view(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = _invitation(request, invitation_id)
    joined = button_apply(
        request,
        lambda: invitation_join(invitation=invitation, user=request.user, actor=Actor.for_request(request)),
        f"You joined {invitation.organisation.name} as {invitation.role}.",
    )
    if joined:
        request.session[SESSION_KEY] = invitation.organisation_id
        return redirect("dashboard:overview")
    return redirect("accounts:invitations")


@require_POST
@signed_in_required
def invitation_decline_view(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = _invitation(request, invitation_id)
    button_apply(
        request,
        lambda: invitation_decline(
            invitation=invitation, user=request.user, actor=Actor.for_request(request)
        ),
        f"You declined the invitation to {invitation.organisation.name}.",
    )
    return redirect("accounts:invitations")


@require_POST
@member_required(Role.ADMIN)
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    membership = _membership(request, membership_id)
    role = request.POST.get("role", "")
    button_apply(
        request,
        lambda: member_role_change(
            membership=membership,
            role=role,
            by=request.membership,
            actor=Actor.for_request(request),
        ),
        f"{membership.user.get_username()} is now {role}.",
    )
    return redirect("accounts:team")


@require_POST
@member_required(Role.ADMIN)
def member_remove_view(request: HttpRequest, membership_id: int) -> HttpResponse:
    membership = _membership(request, membership_id)
    removed = button_apply(
        request,
        lambda: member_remove(membership=membership, by=request.membership, actor=Actor.for_request(request)),
        f"{membership.user.get_username()} was removed.",
    )
    if removed and membership.user_id == request.user.pk:
        return redirect("dashboard:overview")
    return redirect("accounts:team")


class InvitationAcceptView(auth_views.PasswordResetConfirmView):
    """The link in an invitation to someone new: choose a password, then land
    signed in, a member of every organisation that invited the address. It is
    Django's password-reset confirmation, so the link works once and expires
    after ``PASSWORD_RESET_TIMEOUT``."""

    template_name = "accounts/invitation_accept.html"
    post_reset_login = True
    success_url = reverse_lazy("dashboard:overview")

    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)  # sets the password, signs in
            invitations_accept_all(user=form.user, actor=Actor.for_user(form.user, self.request))
        return response


invitation_accept = InvitationAcceptView.as_view()


class PausedLoginView(LoginView):
    """Django's login with the login pause (``PausedLoginMixin``): a paused
    attempt is answered 429 with the reason on the form."""

    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form: LoginForm) -> HttpResponse:
        return paused_login_status(super().form_invalid(form))
