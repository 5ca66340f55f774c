"""The API describes itself, and its docs work offline."""

from django.test import Client


def test_openapi_lists_the_endpoints(db):
    spec = Client().get("/api/openapi.json").json()
    paths = spec["paths"]
    assert "/api/traces" in paths and "post" in paths["/api/traces"]
    assert "/api/agents/{agent_id}/traces" in paths
    assert "/api/traces/{trace_id}" in paths
    assert spec["components"]["securitySchemes"]


def test_docs_use_no_cdn(db):
    body = Client().get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in body
    assert "cdn" not in body.lower() and "https://" not in body
