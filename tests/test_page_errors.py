"""Bad addresses and missing rights in the HTML pages: a page with the message
and a way on, never a server error or Django's bare defaults."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.test import Client, RequestFactory
from django.views.defaults import server_error

from thinnest_analytics.errors import ApiError
from thinnest_analytics.middleware import PageErrorMiddleware

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/traces/?cursor=abc", "/conversations/?cursor=abc"])
def test_a_cursor_the_list_never_handed_out_shows_its_first_page_with_the_message(members, path):
    r = members["viewer"].get(path)
    assert r.status_code == 200
    body = r.content.decode()
    assert 'class="topbar"' in body and 'role="alert"' in body
    assert "does not belong to this list; showing its first page" in body
    assert 'class="list-total"' in body


def test_a_refusal_that_escapes_a_page_is_a_page_with_its_status_and_message(members):
    request = RequestFactory().get("/somewhere/?cursor=abc")
    request.user = AnonymousUser()
    r = PageErrorMiddleware(lambda request: None).process_exception(
        request, ApiError(400, "invalid_cursor", "cursor is not one this page returned")
    )
    assert r.status_code == 400
    body = r.content.decode()
    assert "Cursor is not one this page returned." in body
    assert 'href="/somewhere/"' in body and "Start again without the filters" in body


def test_a_billing_date_out_of_range_is_a_message_on_the_page(members):
    r = members["viewer"].get("/billing/?end=9999-12-31")
    assert r.status_code == 200
    assert "pick a day between 2000-01-01 and 2200-12-31" in r.content.decode()


def test_a_custom_range_ending_in_the_year_9999_shows_the_error_and_the_default_window(members):
    r = members["viewer"].get("/?period=custom&from=2026-01-01&to=9999-12-31")
    assert r.status_code == 200
    body = r.content.decode()
    assert 'role="alert"' in body and "out of range" in body and "showing the last 24 hours" in body


def test_an_unknown_address_gets_the_products_404_page(members):
    r = members["viewer"].get("/traces/no-such-trace/")
    assert r.status_code == 404
    body = r.content.decode()
    assert "<h1>Not found</h1>" in body and 'class="topbar"' in body and "Go to the overview" in body


def test_a_missing_role_gets_the_products_403_page(members):
    r = members["viewer"].get("/audit/")
    assert r.status_code == 403
    body = r.content.decode()
    assert "<h1>Not allowed</h1>" in body and "viewer" in body


def test_a_server_error_gets_a_page_that_needs_neither_request_nor_database():
    r = server_error(RequestFactory().get("/"))
    assert r.status_code == 500
    body = r.content.decode()
    assert "Something went wrong on our side" in body and "/static/css/app.css" in body


def test_a_superuser_in_no_organisation_is_told_how_to_join_one(db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    c = Client()
    c.force_login(user)
    r = c.get("/")
    assert r.status_code == 404
    body = r.content.decode()
    assert "You are not in an organisation" in body
    assert "manage.py create_user" in body and 'href="/admin/"' in body


def test_a_page_that_can_be_a_panel_varies_on_the_htmx_header(members):
    assert "HX-Request" in members["viewer"].get("/")["Vary"]
