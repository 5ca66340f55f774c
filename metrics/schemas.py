"""The window every analytics answer is asked for and names: query parameters
and the fields echoed back. Shared by the analytics, voice and billing endpoints."""

from datetime import datetime

from ninja import Field, Schema

from thinnest_analytics.errors import ApiError

from .windows import Window, WindowError, parse_window


class WindowParams(Schema):
    period: str | None = Field(None, description="24h, 7d, 30d, or any <n>h / <n>d up to 400d (default 7d)")
    from_: str | None = Field(None, alias="from", description="custom range start, ISO 8601")
    to: str | None = Field(None, description="custom range end (exclusive), ISO 8601; default now")


class AgentWindowParams(WindowParams):
    agent_id: str | None = None


def window_from(params: WindowParams) -> Window:
    try:
        return parse_window(period=params.period, start=params.from_, end=params.to)
    except WindowError as exc:
        raise ApiError(400, "invalid_window", str(exc)) from None


class WindowOut(Schema):
    period: str
    from_: datetime = Field(..., alias="from")
    to: datetime
