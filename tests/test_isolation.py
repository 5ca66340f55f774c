"""Isolation matrix: every HTML page, JSON operation and admin URL, enumerated
from the URL resolver and the API's routers (a new endpoint is covered the day it
is added), proves that anonymous callers are refused, another organisation's
member or key gets 404 and never a byte of this organisation's data, and each
role and scope gets exactly what it is granted."""

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.models import ApiKey, Invitation, Membership, Role
from agents.models import Agent, Deployment, PhoneNumber, Trace
from alerts.models import AlertRule
from audit.services import Actor
from pricing.models import ModelPrice
from thinnest_analytics.api import api

from .conftest import Tenant, _tenant, trace

SECRET_INPUT = "VICTIM-SECRET-INPUT-7731"
SECRET_AGENT = "Victim Agent Zq"
VICTIM_INVITEE = "victim-invitee@example.com"
MARKERS = [SECRET_INPUT, SECRET_AGENT, "sk-VICTIMTOOLKEY", VICTIM_INVITEE]
PUBLIC = {"login", "logout", "healthz", "invitation_accept", "api-root", "openapi-json", "openapi-view"}
ROLES = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]


@pytest.fixture
def world(db):
    from agents.deployments import deployment_create
    from agents.phone_numbers import phone_number_assign
    from agents.services import agent_tool_save

    victim, outsider = _tenant("victim"), _tenant("other-corp")
    users = {}
    for role in ROLES:
        from accounts.services import user_create_or_update

        users[role], _ = user_create_or_update(
            organisation=victim.organisation, username=f"v-{role}", password=None, role=role
        )
    stranger, _ = user_create_or_update(
        organisation=outsider.organisation, username="stranger", password=None, role=Role.OWNER
    )
    now = timezone.now()
    ingest = victim.api("ingest")
    assert (
        ingest.post(
            "/api/traces",
            trace(
                id="t1",
                session_id="c1",
                agent_id="agent_abc123",
                agent_name=SECRET_AGENT,
                input=SECRET_INPUT,
                created_at=(now - timedelta(minutes=30)).isoformat(),
            ),
        ).status_code
        == 200
    )
    agent = Agent.objects.get(organisation=victim.organisation)
    actor = Actor.system("test")
    agent_tool_save(
        agent=agent, actor=actor, name="search", config={"api_key": "sk-VICTIMTOOLKEY"}, create=True
    )
    deployment = deployment_create(agent=agent, actor=actor, changes="first")
    deployment_create(agent=agent, actor=actor, changes="second")
    phone = phone_number_assign(
        organisation=victim.organisation, number="+15550001234", agent=agent, actor=actor
    )
    rule = AlertRule.objects.create(
        organisation=victim.organisation, name="Victim rule", kind="latency", threshold=1000
    )
    invitation = Invitation.objects.create(
        organisation=victim.organisation, email=VICTIM_INVITEE, role=Role.ADMIN, invited_by="v-owner"
    )
    price = ModelPrice.objects.create(
        organisation=victim.organisation,
        model_name="victim-model",
        match_pattern="victim-model",
        input_price_per_mtok=1,
        output_price_per_mtok=2,
        effective_from=now - timedelta(days=1),
    )
    return {
        "victim": victim,
        "outsider": outsider,
        "users": users,
        "stranger": stranger,
        "params": {
            "agent_id": agent.public_id,
            "trace_id": "t1",
            "session_id": "c1",
            "prefix": ApiKey.objects.filter(organisation=victim.organisation).first().prefix,
            "membership_id": Membership.objects.get(user=users[Role.VIEWER]).pk,
            "deployment_id": deployment.pk,
            "tool_name": "search",
            "phone_id": phone.pk,
            "rule_id": rule.pk,
            "price_id": price.pk,
            "invitation_id": invitation.pk,
        },
    }


def _signed_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _fill(pattern: str, params: dict) -> str:
    def sub(match):
        name = match.group(1).split(":")[-1]
        assert name in params, (
            f"no test object for URL parameter '{name}' in {pattern}: add one to the world fixture"
        )
        return str(params[name])

    return "/" + re.sub(r"[<{]([^>}]+)[>}]", sub, pattern)


def _html_patterns():
    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                if str(p.pattern) in ("api/", "admin/"):
                    continue
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield prefix + str(p.pattern), p

    return list(walk(get_resolver().url_patterns))


def _no_markers(response) -> None:
    body = response.content.decode(errors="replace")
    for marker in MARKERS:
        assert marker not in body, f"{marker} leaked"


def _victim_unchanged(world) -> None:
    org = world["victim"].organisation
    assert Agent.objects.filter(organisation=org, archived_at__isnull=True).count() == 1
    assert Trace.objects.filter(organisation=org).count() == 1
    assert AlertRule.objects.filter(organisation=org).count() == 1
    assert PhoneNumber.objects.filter(organisation=org, agent__isnull=False).count() == 1
    assert Deployment.objects.filter(agent__organisation=org).count() == 2
    assert ApiKey.objects.filter(organisation=org, revoked_at__isnull=True).count() == 7
    assert Membership.objects.filter(organisation=org).count() == 4
    assert ModelPrice.objects.filter(organisation=org, model_name="victim-model").count() == 1
    assert Invitation.objects.filter(organisation=org).count() == 1


# --- HTML ------------------------------------------------------------------------


def _signed_in_only(view) -> bool:
    """A page about the signed-in person themselves (their invitations), for any
    account whatever its organisations."""
    return getattr(view.callback, "signed_in_only", False)


def test_every_page_is_protected_or_deliberately_public():
    for pattern, view in _html_patterns():
        role = getattr(view.callback, "required_role", None)
        assert role is not None or _signed_in_only(view) or view.name in PUBLIC, (
            f"/{pattern} ({view.name}) has no member_required"
        )


def test_pages_refuse_anonymous_callers(world):
    for pattern, view in _html_patterns():
        if view.name in PUBLIC:
            continue
        path = _fill(pattern, world["params"])
        for method in ("get", "post"):
            r = getattr(Client(), method)(path)
            assert r.status_code in (302, 405), (path, method, r.status_code)
            if r.status_code == 302:
                assert r["Location"].startswith("/login/")


def test_another_organisations_member_sees_nothing_and_changes_nothing(world):
    c = _signed_in(world["stranger"])
    for pattern, view in _html_patterns():
        if view.name in PUBLIC or view.name == "organisation_switch":
            continue
        path = _fill(pattern, world["params"])
        has_object = "<" in pattern
        r = c.get(path)
        if has_object:
            assert r.status_code in (404, 405), (path, r.status_code)
        else:
            assert r.status_code in (200, 403, 405), (path, r.status_code)
        _no_markers(r)
        r = c.post(path, {"name": "hijack", "role": "owner", "for": "1h"})
        # Without an object in the URL a change lands in the caller's own organisation.
        expected = (403, 404, 405) if has_object else (200, 302, 400, 403, 404, 405)
        assert r.status_code in expected, (path, r.status_code)
        _no_markers(r)
    _victim_unchanged(world)
    # Switching into an organisation one does not belong to is refused too.
    victim_pk = world["victim"].organisation.pk
    assert c.post("/organisation/switch/", {"organisation": victim_pk}).status_code == 404


def test_each_role_gets_exactly_its_pages(world):
    granted = {role: i for i, role in enumerate(ROLES)}
    for pattern, view in _html_patterns():
        if view.name in PUBLIC:
            continue
        if _signed_in_only(view):
            # No role opens them: each person sees and answers only invitations to themselves.
            path = _fill(pattern, world["params"])
            for user in world["users"].values():
                c = _signed_in(user)
                assert c.get(path).status_code in (200, 405), path
                _no_markers(c.get(path))
                if "<" in pattern:  # answering someone else's invitation
                    assert c.post(path, {}).status_code == 404, path
            continue
        needed_get, needed_post = view.callback.required_role, view.callback.post_role
        path = _fill(pattern, world["params"])
        for role, user in world["users"].items():
            c = _signed_in(user)
            r = c.get(path)
            if r.status_code == 405:
                pass  # a POST-only action
            elif granted[role] < granted[needed_get]:
                assert r.status_code == 403, (path, role, r.status_code)
            else:
                assert r.status_code != 403, (path, role)
            if granted[role] < granted[needed_post]:
                assert c.post(path, {}).status_code in (403, 405), (path, role, "post")
    _victim_unchanged(world)


def test_sensitive_pages_need_the_roles_the_design_grants():
    names = {view.name: view.callback for _, view in _html_patterns() if view.name not in PUBLIC}
    admin_only = [
        "api_keys",
        "api_key_revoke",
        "team",
        "member_role",
        "member_remove",
        "invitation_cancel",
        "audit",
        "rollback",
        "edit",
        "mute",
        "delete",
        "test",
    ]
    for name in admin_only:
        assert names[name].post_role in (Role.ADMIN, Role.OWNER), name
    for name in ["archive", "tool_edit", "tool_remove", "phone_number_release"]:
        assert names[name].post_role == Role.MEMBER, name
    for name in ["overview", "agent_performance", "conversations", "conversation", "traces", "trace"]:
        assert names[name].required_role == Role.VIEWER, name


# --- JSON API --------------------------------------------------------------------


def _operations():
    # The routers as mounted: a router's auth may be given where the API root mounts it.
    for router in api._get_bound_routers():
        prefix = router.prefix
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                scopes = [getattr(a, "scope", None) for a in operation.auth_callbacks or []]
                for method in operation.methods:
                    yield method, "api" + prefix + path, scopes[0] if scopes else None


def _call(client: Client, method: str, path: str, key: str | None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = json.dumps(body if body is not None else {})
    return (
        getattr(client, method.lower())(path, data, content_type="application/json", **headers)
        if method != "GET"
        else client.get(path, **headers)
    )


def test_every_operation_needs_a_key():
    ops = list(_operations())
    assert len(ops) > 20
    for method, pattern, scope in ops:
        assert scope is not None, f"{method} /{pattern} has no API key auth"


def test_operations_refuse_missing_and_unknown_keys(world):
    for method, pattern, _ in _operations():
        path = _fill(pattern, world["params"])
        for key in (None, "ta_00000000_nonsense"):
            r = _call(Client(), method, path, key)
            assert r.status_code == 401, (method, path, r.status_code)
            _no_markers(r)


def test_scopes_grant_exactly_their_operations(world):
    victim: Tenant = world["victim"]
    others = {"read": "admin,ingest", "ingest": "admin,read", "admin": "ingest,read"}
    for method, pattern, scope in _operations():
        path = _fill(pattern, world["params"])
        lacking = victim.keys[others[scope.value]]
        r = _call(Client(), method, path, lacking)
        assert r.status_code == 403, (method, path, scope, r.status_code)
        _no_markers(r)
        if method == "GET":
            r = _call(Client(), method, path, victim.keys[scope.value])
            assert r.status_code not in (401, 403), (method, path, r.status_code)
    _victim_unchanged(world)


def test_another_organisations_key_gets_404_and_no_data(world):
    key = world["outsider"].keys["admin,ingest,read"]
    for method, pattern, _ in _operations():
        path = _fill(pattern, world["params"])
        r = _call(Client(), method, path, key)
        has_object = "{" in pattern
        if has_object:
            # 400 only for a malformed request, which is judged before any lookup.
            assert r.status_code in (400, 404), (method, path, r.status_code)
        _no_markers(r)
    _victim_unchanged(world)


# --- admin -----------------------------------------------------------------------


def test_the_admin_is_for_staff_only(world):
    from django.contrib import admin

    paths = ["/admin/"]
    for model in admin.site._registry:
        meta = model._meta
        paths.append(f"/admin/{meta.app_label}/{meta.model_name}/")
    non_staff = [Client(), _signed_in(world["users"][Role.OWNER]), _signed_in(world["stranger"])]
    for path in paths:
        for c in non_staff:
            r = c.get(path)
            assert r.status_code == 302 and "/admin/login/" in r["Location"], (path, r.status_code)
    staff = get_user_model().objects.create_superuser("auditor", "a@example.com", "pw-123456")
    c = _signed_in(staff)
    for path in paths:
        assert c.get(path).status_code == 200, path


# --- WebSocket -------------------------------------------------------------------


def _websocket_routes() -> list[str]:
    from thinnest_analytics.asgi import application

    router = application.application_mapping["websocket"]
    return [str(route.pattern) for route in router.routes]


@pytest.mark.django_db(transaction=True)
def test_every_websocket_route_refuses_strangers_before_any_frame(settings):
    from asgiref.sync import async_to_sync
    from channels.testing import WebsocketCommunicator

    from thinnest_analytics.asgi import application

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    victim, outsider = _tenant("ws-victim"), _tenant("ws-other")
    assert (
        victim.api("ingest").post("/api/traces", trace(id="t1", agent_id="agent_abc123")).status_code == 200
    )
    routes = _websocket_routes()
    assert routes, "the ASGI router has no WebSocket routes"

    async def connect(path: str, headers: list) -> tuple[bool, object]:
        """(admitted, first frame): a refusal is a close (4xxx) before any frame."""
        communicator = WebsocketCommunicator(application, path, headers=[(b"host", b"testserver"), *headers])
        connected, _ = await communicator.connect(timeout=5)
        if not connected:
            return False, None
        output = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        if output["type"] == "websocket.close":
            assert output["code"] >= 4000
            return False, None
        return True, json.loads(output["text"])

    def bearer(tenant: Tenant, scopes: str) -> list:
        return [(b"authorization", f"Bearer {tenant.keys[scopes]}".encode())]

    for route in routes:
        path = _fill(route, {"agent_id": "agent_abc123"})
        for headers in ([], bearer(outsider, "admin,ingest,read"), bearer(victim, "admin,ingest")):
            connected, frame = async_to_sync(connect)(path, headers)
            assert not connected and frame is None, (path, headers)
        connected, frame = async_to_sync(connect)(path, bearer(victim, "read"))
        assert connected and frame["agent_id"] == "agent_abc123", path
