"""Who may see and do what in the HTML pages. Every view asks here."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from thinnest_analytics.db import on_worker_thread

from .models import Role


def member_required(role: str = Role.VIEWER, *, to_post: str | None = None) -> Callable:
    """Signed in, a member of the current organisation, with at least ``role``;
    with ``to_post``, a POST needs at least that role (a page readers see that
    also takes a change). Non-members get 404 so the page does not reveal that
    anything exists.

    The page runs on a worker thread of its own: under ASGI Django would run every
    synchronous view of a process on one thread, so one slow page would hold up
    every other page and API read behind it."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        @on_worker_thread
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.membership is None:
                # Signed in but in no organisation (a superuser made with
                # createsuperuser, a member removed from their last one): say
                # so, and where to go, rather than a bare "Not Found".
                return render(request, "accounts/no_organisation.html", status=404)
            needed = to_post if to_post is not None and request.method == "POST" else role
            if not request.membership.has_role(needed):
                raise PermissionDenied(f"this needs the {needed} role")
            return view(request, *args, **kwargs)

        # Read by the isolation tests, which prove every page enforces this.
        wrapped.required_role = Role(role)
        wrapped.post_role = Role(to_post) if to_post is not None else Role(role)
        return wrapped

    return decorator


def signed_in_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Signed in, whatever organisations one belongs to: for the pages about the
    person themselves (their invitations), which show nothing of any
    organisation they are not invited to."""

    wrapped = login_required(on_worker_thread(view))
    wrapped.signed_in_only = True  # read by the isolation tests
    return wrapped
