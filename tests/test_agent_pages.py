"""The agent management pages: list, create, edit, tools with masked secrets, archive."""

import html
import json

import pytest

from agents.models import Agent
from audit.models import AuditLog

SECRET = "xoxb-1234567890-abcdefghijkl"


@pytest.fixture
def agent(members):
    r = members["member"].post(
        "/agents/",
        {"id": "agent_support", "name": "Support Agent", "instructions": "Be kind.", "model": "gpt-4o-mini"},
    )
    assert r.status_code == 302, r.content.decode()
    return Agent.objects.get(public_id="agent_support")


def test_every_member_sees_the_agent_pages(members, agent):
    for path in (
        "/agents/",
        "/agents/agent_support/",
        "/agents/agent_support/tools/",
        "/agents/agent_support/deployments/",
    ):
        r = members["viewer"].get(path)
        assert r.status_code == 200, path
        assert b"Support Agent" in r.content


def test_a_viewer_sees_no_forms_and_cannot_change_anything(members, agent):
    viewer = members["viewer"]
    assert b"Create agent" not in viewer.get("/agents/").content
    assert b"Archive" not in viewer.get("/agents/agent_support/").content
    assert viewer.post("/agents/", {"name": "Nope"}).status_code == 403
    assert viewer.post("/agents/agent_support/", {"name": "Nope"}).status_code == 403
    assert viewer.post("/agents/agent_support/archive/").status_code == 403
    assert viewer.post("/agents/agent_support/tools/", {"name": "t", "config": "{}"}).status_code == 403
    assert viewer.get("/agents/agent_support/tools/x/").status_code == 403
    assert Agent.objects.get(pk=agent.pk).name == "Support Agent"


def test_an_outsider_gets_404(members, agent):
    outsider = members["outsider"]
    assert outsider.get("/agents/agent_support/").status_code == 404
    assert outsider.post("/agents/agent_support/", {"name": "Mine"}).status_code == 404
    assert outsider.post("/agents/agent_support/archive/").status_code == 404
    assert b"Support Agent" not in outsider.get("/agents/").content


def test_a_member_creates_an_agent_and_it_is_audited(agent):
    assert agent.config["instructions"] == "Be kind."
    assert agent.config["temperature"] is None
    entry = AuditLog.objects.get(action="agent.create", resource_id="agent_support")
    assert entry.user_id == "member-user"


def test_a_refused_create_shows_the_form_again(members, agent):
    r = members["member"].post("/agents/", {"id": "agent_support", "name": "Again"})
    assert r.status_code == 400
    assert b"already exists" in r.content
    r = members["member"].post("/agents/", {"name": "Hot", "temperature": "3"})
    assert r.status_code == 400
    assert b"less than or equal to 2" in r.content


def test_a_member_edits_instructions_temperature_and_model(members, agent):
    r = members["member"].post(
        "/agents/agent_support/",
        {"name": "Support Agent", "instructions": "Be brief.", "model": "gpt-4o", "temperature": "0.2"},
    )
    assert r.status_code == 302
    agent.refresh_from_db()
    assert (agent.config["instructions"], agent.config["model"], agent.config["temperature"]) == (
        "Be brief.",
        "gpt-4o",
        0.2,
    )
    entry = AuditLog.objects.get(action="agent.update")
    assert entry.details["changed_fields"] == ["instructions", "model", "temperature"]


def test_tools_are_shown_masked_and_a_mask_left_alone_keeps_the_secret(members, agent):
    member = members["member"]
    r = member.post(
        "/agents/agent_support/tools/",
        {"name": "slack", "config": f'{{"bot_token": "{SECRET}", "channel": "#support"}}'},
    )
    assert r.status_code == 302
    page = member.get("/agents/agent_support/tools/").content.decode()
    assert "#support" in page and SECRET not in page and "[redacted:" in page
    form = member.get("/agents/agent_support/tools/slack/").content.decode()
    assert SECRET not in form and "[redacted:" in form
    masked = form.split("<textarea")[1].split(">", 1)[1].split("</textarea>")[0]
    settings = json.loads(html.unescape(masked))
    settings["channel"] = "#help"
    r = member.post("/agents/agent_support/tools/slack/", {"config": json.dumps(settings)})
    assert r.status_code == 302
    agent.refresh_from_db()
    assert agent.config["tools"] == [{"name": "slack", "config": {"bot_token": SECRET, "channel": "#help"}}]
    entry = AuditLog.objects.get(action="tool.config_update")
    assert entry.resource_id == "agent_support/slack"
    assert entry.details["changed_fields"] == ["channel"]


def test_a_viewer_sees_every_tool_setting_masked_unless_the_tool_makes_it_public(members, agent):
    settings = {"note": "my password is hunter2-horse", "endpoint": "https://crm.example.com", "retries": 3}
    r = members["member"].post(
        "/agents/agent_support/tools/",
        {"name": "crm", "config": json.dumps(settings), "public_settings": "endpoint"},
    )
    assert r.status_code == 302
    viewer_page = html.unescape(members["viewer"].get("/agents/agent_support/tools/").content.decode())
    assert "hunter2-horse" not in viewer_page and '"retries": 3' not in viewer_page
    assert "https://crm.example.com" in viewer_page and "[redacted]" in viewer_page
    member_page = html.unescape(members["member"].get("/agents/agent_support/tools/").content.decode())
    assert "my password is hunter2-horse" in member_page and '"retries": 3' in member_page


def test_a_member_changes_which_tool_settings_every_reader_sees(members, agent):
    member = members["member"]
    member.post("/agents/agent_support/tools/", {"name": "crm", "config": '{"region": "eu-west-1"}'})
    assert "eu-west-1" not in members["viewer"].get("/agents/agent_support/tools/").content.decode()
    r = member.post(
        "/agents/agent_support/tools/crm/", {"config": '{"region": "eu-west-1"}', "public_settings": "region"}
    )
    assert r.status_code == 302
    assert "eu-west-1" in members["viewer"].get("/agents/agent_support/tools/").content.decode()
    agent.refresh_from_db()
    assert agent.config["tools"] == [
        {"name": "crm", "config": {"region": "eu-west-1"}, "public_settings": ["region"]}
    ]
    entry = AuditLog.objects.get(action="tool.config_update")
    assert entry.details["changed_fields"] == ["public_settings"]
    assert entry.details["public_settings"] == ["region"]


def test_tool_settings_must_be_a_json_object(members, agent):
    r = members["member"].post("/agents/agent_support/tools/", {"name": "t", "config": "[1, 2]"})
    assert r.status_code == 400
    assert b"JSON object" in r.content
    r = members["member"].post("/agents/agent_support/tools/", {"name": "bad name", "config": "{}"})
    assert r.status_code == 400
    assert b"tools.0.name" in r.content


def test_a_member_removes_a_tool(members, agent):
    members["member"].post("/agents/agent_support/tools/", {"name": "search", "config": "{}"})
    r = members["member"].post("/agents/agent_support/tools/search/remove/")
    assert r.status_code == 302
    agent.refresh_from_db()
    assert agent.config["tools"] == []
    assert AuditLog.objects.filter(action="tool.remove", resource_id="agent_support/search").count() == 1


def test_a_member_archives_an_agent(members, agent):
    r = members["member"].post("/agents/agent_support/archive/")
    assert r.status_code == 302
    agent.refresh_from_db()
    assert agent.archived_at is not None
    page = members["member"].get("/agents/agent_support/").content.decode()
    assert "archived" in page and "Archive Support Agent" not in page


def test_pages_use_no_inline_script_or_style(members, agent):
    for path in ("/agents/", "/agents/agent_support/", "/agents/agent_support/tools/", "/phone-numbers/"):
        body = members["owner"].get(path).content.decode()
        assert "<script>" not in body and " style=" not in body and "onclick" not in body
        assert "csrfmiddlewaretoken" in body
