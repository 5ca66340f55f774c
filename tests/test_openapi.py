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


def test_every_reference_in_the_spec_resolves(db):
    spec = Client().get("/api/openapi.json").json()
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[-1] in spec["components"]["schemas"], ref
    for path in ("/api/traces", "/api/usage/events"):
        one, batch = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "oneOf"
        ]
        assert "agent_id" in one["properties"] and len(batch["properties"]) == 1
