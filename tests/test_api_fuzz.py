"""Schemathesis against /api/openapi.json: every operation, with a key that
holds every scope, under generated inputs — never a 5xx, and every declared
response matches its schema."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from .conftest import _tenant, trace

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
EXAMPLES = 25


def test_every_operation_survives_generated_input(live_server):
    tenant = _tenant("fuzzed")
    assert (
        tenant.api("ingest").post("/api/traces", trace(id="trace_xyz", agent_id="agent_abc123")).status_code
        == 200
    )
    headers = {"Authorization": f"Bearer {tenant.keys['admin,ingest,read']}"}
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/openapi.json")
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case):
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except BaseException as exc:  # noqa: BLE001 — schemathesis reports a FailureGroup; collect all, then report
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:800]}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
