import json
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from accounts.models import Organisation, Role
from accounts.services import api_key_create, organisation_get_or_create, user_create_or_update
from audit.services import Actor


@pytest.fixture(autouse=True)
def _test_settings(request, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Tests inside one transaction need every query on the test's own connection;
    # tests against a live server (committed data) keep the production setting.
    settings.DB_WORKER_THREADS = "live_server" in request.fixturenames


def postgres_only():
    return pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL)")


@dataclass
class ApiClient:
    """A test client that sends one API key, speaking JSON."""

    client: Client
    key: str | None

    def _headers(self):
        return {"HTTP_AUTHORIZATION": f"Bearer {self.key}"} if self.key else {}

    def get(self, path: str, params: dict | None = None):
        return self.client.get(path, params or {}, **self._headers())

    def post(self, path: str, body=None, raw: bytes | str | None = None, **extra):
        data = raw if raw is not None else json.dumps(body)
        return self.client.post(path, data, content_type="application/json", **self._headers(), **extra)


@dataclass
class Tenant:
    organisation: Organisation
    keys: dict[str, str]

    def api(self, *scopes: str) -> ApiClient:
        return ApiClient(Client(), self.keys[",".join(sorted(scopes))])


def _tenant(slug: str) -> Tenant:
    org = organisation_get_or_create(slug=slug)
    keys = {}
    for scopes in (
        ["read"],
        ["ingest"],
        ["admin"],
        ["ingest", "read"],
        ["admin", "ingest"],
        ["admin", "read"],
        ["admin", "ingest", "read"],
    ):
        created = api_key_create(
            organisation=org, name="+".join(scopes), scopes=scopes, actor=Actor.system("test")
        )
        keys[",".join(sorted(scopes))] = created.raw_key
    return Tenant(org, keys)


@pytest.fixture
def tenant(db) -> Tenant:
    return _tenant("acme")


@pytest.fixture
def outsider(db) -> Tenant:
    return _tenant("other-corp")


@pytest.fixture
def ingest(tenant) -> ApiClient:
    return tenant.api("ingest")


@pytest.fixture
def reader(tenant) -> ApiClient:
    return tenant.api("read")


@pytest.fixture
def members(tenant, outsider):
    """Signed-in clients: one per role in ``tenant`` and a member of ``outsider``."""
    clients = {}
    for role in Role.values:
        user, _ = user_create_or_update(
            organisation=tenant.organisation, username=f"{role}-user", password="pw-123456", role=role
        )
        c = Client()
        c.force_login(user)
        clients[role] = c
    stranger, _ = user_create_or_update(
        organisation=outsider.organisation, username="stranger", password="pw-123456", role=Role.OWNER
    )
    c = Client()
    c.force_login(stranger)
    clients["outsider"] = c
    return clients


@pytest.fixture
def superuser(db) -> Client:
    """A signed-in superuser, for the Django admin."""
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    c = Client()
    c.force_login(user)
    return c


def trace(**fields) -> dict:
    """A valid trace payload; override any field."""
    body = {
        "agent_id": "agent_abc123",
        "session_id": "sess_123",
        "input": "What are your hours?",
        "output": "We're open Monday to Friday, 9 AM to 5 PM EST.",
        "model": "gpt-4o-mini",
        "input_tokens": 145,
        "output_tokens": 28,
        "latency_ms": 890,
        "created_at": "2026-03-06T14:30:00Z",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def rollup_snapshot(organisation) -> dict:
    """Every hourly and daily rollup row of an organisation, keyed, without ids."""
    from metrics.models import DailyRollup, HourlyRollup

    out = {}
    for model in (HourlyRollup, DailyRollup):
        for row in model.objects.filter(organisation=organisation).values():
            row.pop("id")
            out[
                (
                    model.__name__,
                    row["agent_id"],
                    row["channel"],
                    row["deployment_version"],
                    row["bucket_start"],
                )
            ] = row
    return out


@pytest.fixture(autouse=True)
def _fresh_price_tables():
    """Organisation ids are reused between tests on SQLite: start each test uncached."""
    from pricing.prices import price_tables_forget

    price_tables_forget()


def usage_event(**fields) -> dict:
    """A valid usage event payload (scraping); override any field."""
    body = {
        "id": "evt_1",
        "agent_id": "agent_abc123",
        "category": "scraping",
        "quantity": "12",
        "unit": "pages",
        "cost_usd": "0.0360",
        "at": "2026-03-06T14:30:00Z",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def usage_rollup_snapshot(organisation) -> dict:
    """Every per-category usage rollup row of an organisation, keyed, without ids."""
    from billing.models import UsageRollup

    return {
        (row["category"], row["bucket_start"]): (row["events"], row["cost_usd"])
        for row in UsageRollup.objects.filter(organisation=organisation).values()
    }


def post_json(url: str, key: str, body, headers: dict | None = None) -> tuple[int, dict]:
    """POST ``body`` as JSON to a live server with an API key: (status, answer)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def race(calls: list) -> list:
    """Run every callable on its own thread, released at the same moment; their results in order."""
    import threading

    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def at_once(fn, threads: int = 4) -> list:
    """Call ``fn`` from ``threads`` threads released together, each on its own
    database connection; their results."""
    import threading

    barrier = threading.Barrier(threads)
    results = []

    def run():
        barrier.wait()
        try:
            results.append(fn())
        finally:
            connection.close()

    started = [threading.Thread(target=run) for _ in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return results


@pytest.fixture(autouse=True)
def _raw_rows_kept(settings):
    """Tests use fixed dates; with retention on, windows on them would be read
    in whole hours once the dates fall behind RETENTION_DAYS. Retention tests
    set it themselves."""
    settings.RETENTION_DAYS = 0


# Webhook receivers in tests listen on loopback, which outbound requests reach
# only where an installation allows it: tests that deliver opt in, as a
# self-hosted installation with an internal receiver would.
LOOPBACK = "127.0.0.0/8"


@pytest.fixture
def loopback_receivers(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = [LOOPBACK]
