"""An agent's configuration — instructions, model, temperature, tools with their
settings — and the rules every way of changing it shares (API, pages, deployments).

Tool settings hold secrets. Wherever a configuration is shown (API answers,
pages), tool settings pass through ``config_masked``: known secrets are masked
for everyone (``audit.redaction.redact``), and readers below the member role (and
API keys without the admin scope) see every setting masked except those the tool
lists in ``public_settings`` — free text such as a note can hold a secret no
pattern recognises. A masked value sent back unchanged keeps the stored secret
(``tools_restore``).
"""

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_serializer,
)

from audit.redaction import MARKER_PREFIX, has_marker, redact, redact_text, restore_redacted
from thinnest_analytics.errors import ApiError
from thinnest_analytics.validation import json_value_check

from .schemas import validation_reason

TOOL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
MAX_INSTRUCTIONS_CHARS = 50_000
MAX_TOOLS = 50
MAX_TOOL_CONFIG_BYTES = 16 * 1024
MAX_TOOL_CONFIG_DEPTH = 12
# The fields a change to an agent can touch, in the order the log lists them.
AGENT_FIELDS = ("name", "instructions", "model", "temperature", "tools")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character, which cannot be stored")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


AgentName = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(_no_nul), AfterValidator(_not_blank)
]
Instructions = Annotated[str, Field(max_length=MAX_INSTRUCTIONS_CHARS), AfterValidator(_no_nul)]
ModelName = Annotated[str, Field(max_length=200), AfterValidator(_no_nul)]
Temperature = Annotated[float, Strict(), Field(ge=0, le=2, allow_inf_nan=False)]
ToolName = Annotated[str, Field(min_length=1, max_length=64, pattern=TOOL_NAME_PATTERN)]
VersionLabel = Annotated[str, Field(min_length=1, max_length=64, pattern=VERSION_PATTERN)]
SettingName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
# What readers below the member role see in place of a tool setting that is not public.
SETTING_MASK = f"{MARKER_PREFIX}]"


class ToolIn(BaseModel):
    """One tool the agent may call, with its settings (URLs, keys, options)."""

    model_config = ConfigDict(extra="forbid")

    name: ToolName
    config: dict[str, Any] = Field(default_factory=dict)
    public_settings: list[SettingName] = Field(
        default_factory=list,
        max_length=MAX_TOOLS,
        description="settings every reader may see (viewers, keys without the admin scope); "
        "they see the others masked",
    )

    @field_validator("config")
    @classmethod
    def _config_fits(cls, config: dict[str, Any]) -> dict[str, Any]:
        return json_value_check(config, max_depth=MAX_TOOL_CONFIG_DEPTH, max_bytes=MAX_TOOL_CONFIG_BYTES)

    @field_validator("public_settings")
    @classmethod
    def _sorted_once(cls, names: list[str]) -> list[str]:
        return sorted(set(names))

    @model_serializer(mode="wrap")
    def _without_empty_public_settings(self, handler) -> dict[str, Any]:
        # A tool that marks nothing public is stored as it was before the field existed.
        data = handler(self)
        if not data.get("public_settings"):
            data.pop("public_settings", None)
        return data


class AgentConfig(BaseModel):
    """A whole configuration. ``temperature`` null means the model's default."""

    model_config = ConfigDict(extra="forbid")

    instructions: Instructions = ""
    model: ModelName = ""
    temperature: Temperature | None = None
    tools: list[ToolIn] = Field(default_factory=list, max_length=MAX_TOOLS)

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, tools: list[ToolIn]) -> list[ToolIn]:
        seen = set()
        for tool in tools:
            if tool.name in seen:
                raise ValueError(f"tool '{tool.name}' is listed twice")
            seen.add(tool.name)
        return tools


class AgentConfigPatch(BaseModel):
    """Some fields of a configuration; the others keep their values."""

    model_config = ConfigDict(extra="forbid")

    instructions: Instructions | None = None
    model: ModelName | None = None
    temperature: Temperature | None = None
    tools: list[ToolIn] | None = Field(None, max_length=MAX_TOOLS)


def config_validate(raw: Any) -> dict:
    """A complete, valid configuration from ``raw``, or a 400 naming each problem."""
    try:
        return AgentConfig.model_validate(raw).model_dump()
    except ValidationError as exc:
        raise ApiError(400, "invalid_config", f"config: {validation_reason(exc)}") from None


def config_complete(stored: dict) -> dict:
    """A stored configuration (or deployment snapshot) with every field present:
    agents registered by ingestion start with an empty one."""
    defaults = AgentConfig().model_dump()
    return {k: (stored or {}).get(k, default) for k, default in defaults.items()}


def config_of(agent) -> dict:
    return config_complete(agent.config)


def tools_restore(new_tools: list[dict], old_tools: list[dict]) -> list[dict]:
    """Tools as sent, with masked settings sent back unchanged replaced by the
    stored secrets of the tool of the same name. A masked value that matches
    nothing stored is refused: it would store the mask instead of a secret."""
    old_by_name = {t["name"]: t.get("config", {}) for t in old_tools}
    restored = []
    for tool in new_tools:
        config = tool.get("config", {})
        if tool.get("name") in old_by_name:
            config = restore_redacted(config, old_by_name[tool["name"]])
        if has_marker(config):
            raise ApiError(
                400,
                "invalid_config",
                f"config: tool '{tool.get('name')}' holds a masked value that does not match the stored "
                "one; send the real value",
            )
        restored.append({**tool, "config": config})
    return restored


def tool_masked(tool: dict, *, all_settings: bool) -> dict:
    """One tool as it may be shown. Known secrets are always masked; with
    ``all_settings`` (members and above, API keys with the admin scope) every
    other setting is shown, without it (viewers, other keys) only the settings
    the tool lists in ``public_settings`` are and every other value reads
    ``[redacted]``."""
    config = tool.get("config", {})
    public = tool.get("public_settings", [])
    if all_settings:
        shown = redact(config)
    else:
        shown = {
            redact_text(str(k)): redact(v, str(k)) if k in public else SETTING_MASK for k, v in config.items()
        }
    return {"name": tool["name"], "config": shown, "public_settings": list(public)}


def config_masked(config: dict, *, all_settings: bool) -> dict:
    """The configuration as it may be shown: tool settings masked as ``tool_masked`` says."""
    return {
        **config,
        "tools": [tool_masked(t, all_settings=all_settings) for t in config.get("tools", [])],
    }


def agent_fields(name: str, config: dict) -> dict:
    """The fields an agent change is described by: its name and its configuration."""
    return {"name": name, **{k: config.get(k) for k in AGENT_FIELDS if k != "name"}}


def change_details(old: dict, new: dict) -> dict:
    """``{"changed_fields", "old", "new"}`` for the audit log; empty when nothing changed."""
    changed = [f for f in AGENT_FIELDS if old.get(f) != new.get(f)]
    if not changed:
        return {}
    return {
        "changed_fields": changed,
        "old": {f: old.get(f) for f in changed},
        "new": {f: new.get(f) for f in changed},
    }
