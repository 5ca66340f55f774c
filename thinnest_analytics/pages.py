"""What the HTML views share when they change something through a service:
a refusal (``ApiError``) is shown to the person instead of failing the page."""

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest

from .errors import ApiError


def form_apply[T](form: forms.Form, change: Callable[[dict], T]) -> T | None:
    """``change(cleaned_data)`` for a valid form. None when the form is invalid
    or the service refuses; the refusal is then one of the form's errors."""
    if not form.is_valid():
        return None
    try:
        return change(form.cleaned_data)
    except ApiError as exc:
        form.add_error(None, exc.message)
        return None


def button_apply(request: HttpRequest, change: Callable[[], object], done: str) -> bool:
    """A change without a form (archive, remove, release, roll back): ``done`` as
    a success message, or the refusal as an error message."""
    try:
        change()
    except ApiError as exc:
        messages.error(request, exc.message)
        return False
    messages.success(request, done)
    return True


def or_404[T](lookup: Callable[..., T], **kwargs) -> T:
    """``lookup(**kwargs)``: a selector that finds one object of the current
    organisation and raises ``not_found`` otherwise. A page answers that with
    its ordinary Not Found, the same for an unknown object as for another
    organisation's."""
    try:
        return lookup(**kwargs)
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise Http404(exc.message) from None
