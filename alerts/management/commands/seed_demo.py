"""A believable demo organisation: four agents with 60 days of chat, voice and
widget traffic (so a 30-day window has a whole previous window to compare
with), deployments v1–v3, and an alert rule with a history of firing and
resolving. Every id derives from its hour, so re-running adds only the hours
that are missing and never duplicates."""

import math
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction
from tqdm import tqdm

from accounts.models import Role
from accounts.services import organisation_get_or_create, user_create_or_update
from agents.deployments import deployment_create
from agents.models import Agent, Deployment
from agents.services import agent_update, agents_resolve, trace_ingest
from audit.services import Actor
from voice.services import voice_events_ingest


@dataclass(frozen=True)
class DemoAgent:
    public_id: str
    name: str
    channels: tuple[tuple[str, float], ...]
    model: str
    conversations_per_hour: float
    latency_ms: float
    error_rate: float
    tools: tuple[str, ...]
    questions: tuple[tuple[str, str], ...]


AGENTS = (
    DemoAgent(
        "agent_support",
        "Support Agent",
        (("chat", 0.6), ("widget", 0.4)),
        "gpt-4o-mini",
        6.0,
        900,
        0.008,
        ("lookup_order", "search_kb"),
        (
            ("What are your hours?", "We're open Monday to Friday, 9 AM to 5 PM EST."),
            ("Where is my order #{n}?", "Order #{n} left our warehouse yesterday and arrives Thursday."),
            (
                "How do I reset my password?",
                "Use 'Forgot password' on the login page; the link is valid for an hour.",
            ),
            ("Can I return a gift?", "Yes, within 30 days with the gift receipt."),
        ),
    ),
    DemoAgent(
        "agent_sales",
        "Sales Caller",
        (("voice", 1.0),),
        "gpt-4o",
        3.0,
        1400,
        0.012,
        ("crm_lookup", "schedule_demo"),
        (
            ("Hi, who is this?", "This is Ava from Acme, calling about your trial."),
            ("How much does the team plan cost?", "The team plan is $49 per seat per month, billed yearly."),
            ("Can we book a demo for Tuesday?", "Booked: Tuesday at 2 PM, invite sent."),
        ),
    ),
    DemoAgent(
        "agent_booking",
        "Booking Assistant",
        (("widget", 0.7), ("chat", 0.3)),
        "claude-3-5-haiku",
        4.0,
        700,
        0.006,
        ("check_availability", "create_booking"),
        (
            ("Do you have a table for {n} tonight?", "Yes, 7:30 PM is free for {n}. Shall I book it?"),
            ("Yes please, under Kim.", "Done: table for Kim at 7:30 PM."),
            ("Can I move my booking to Friday?", "Moved to Friday at the same time."),
        ),
    ),
    DemoAgent(
        "agent_research",
        "Research Agent",
        (("chat", 1.0),),
        "claude-sonnet-4",
        1.5,
        4200,
        0.02,
        ("web_search", "fetch_page"),
        (
            (
                "Summarise the latest on solid-state batteries.",
                "Three developments stand out this quarter: …",
            ),
            (
                "Compare the top {n} CRM tools for a small team.",
                "Here is a comparison of {n} CRMs by price and features: …",
            ),
        ),
    ),
)

DEFAULT_DAYS = 60
# (version, days before now it was deployed, changes, error-rate multiplier)
DEPLOYMENTS = (
    ("v1", 61, "Initial release", 1.0),
    ("v2", 16, "Updated system prompt and added tools", 0.8),
    ("v3", 5, "Switched retrieval settings", 1.6),
)


def _daily_curve(hour: datetime) -> float:
    """Busy mid-afternoon UTC, quiet at night, lighter at weekends."""
    day = 0.55 + 0.45 * math.sin((hour.hour - 8) / 24 * 2 * math.pi)
    weekend = 0.55 if hour.weekday() >= 5 else 1.0
    return max(0.08, day) * weekend


def _version_at(at: datetime, now: datetime) -> tuple[str, float]:
    current = DEPLOYMENTS[0]
    for dep in DEPLOYMENTS:
        if at >= now - timedelta(days=dep[1]):
            current = dep
    return current[0], current[3]


def _hour_traces(agent: DemoAgent, hour: datetime, now: datetime, outage: bool = False) -> list[dict]:
    """The agent's traces of one hour. With ``outage``, the extra conversations
    of the Sales Caller's CRM outage in that hour: callers who keep trying while
    every reply fails in its tool call. They have ids of their own, so the
    hour's usual traffic is the same with or without them."""
    stamp = hour.strftime("%Y%m%d%H")
    rng = random.Random(f"{agent.public_id}:{'outage:' if outage else ''}{stamp}")
    short = agent.public_id.removeprefix("agent_") + ("_outage" if outage else "")
    expected = agent.conversations_per_hour * _daily_curve(hour)
    conversations = max(0, round(rng.gauss(expected, math.sqrt(expected))))
    if outage:
        conversations = INCIDENT_CONVERSATIONS
    traces = []
    for k in range(conversations):
        channel = rng.choices([c for c, _ in agent.channels], [w for _, w in agent.channels])[0]
        start = hour + timedelta(seconds=rng.uniform(0, 3300))
        version, error_boost = _version_at(start, now)
        turns = rng.randint(1, 6 if channel != "voice" else 9)
        at = start
        for turn in range(turns):
            question, answer = rng.choice(agent.questions)
            n = rng.randint(2, 9)
            latency = rng.lognormvariate(math.log(agent.latency_ms), 0.45)
            failed = rng.random() < agent.error_rate * error_boost or outage
            tool_calls = []
            if rng.random() < 0.35 or outage:
                tool = rng.choice(agent.tools)
                tool_latency = round(rng.uniform(40, 600))
                tool_calls.append(
                    {
                        "name": tool,
                        "arguments": {"query": question.format(n=n)[:40], "limit": n},
                        "result": None if failed else {"ok": True, "items": n},
                        "latency_ms": tool_latency,
                        "error": "upstream timed out after 10s" if failed else "",
                    }
                )
            input_tokens = rng.randint(80, 1800)
            output_tokens = rng.randint(20, 400)
            reply_ms = round(latency)
            trace = {
                "id": f"trace_{short}_{stamp}_{k}_{turn}",
                "agent_id": agent.public_id,
                "agent_name": agent.name,
                "session_id": f"sess_{short}_{stamp}_{k}",
                "channel": channel,
                "deployment_version": version,
                "input": question.format(n=n),
                "reasoning": f"The user asks about '{question.format(n=n)[:30]}'. "
                + ("A tool call is needed." if tool_calls else "I can answer directly."),
                "output": "" if failed else answer.format(n=n),
                "tool_calls": tool_calls,
                "model": agent.model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "latency_ms": reply_ms,
                "status": "error" if failed else "success",
                "error": (
                    "Tool call failed: upstream timed out"
                    if tool_calls
                    else "Model call failed: rate limited"
                )
                if failed
                else "",
                "created_at": at.isoformat(),
                "steps": _steps(agent, at, reply_ms, tool_calls, input_tokens, output_tokens, failed),
            }
            if rng.random() < 0.3:
                trace["evaluation_score"] = (
                    rng.choice([2, 3, 4, 4, 5, 5]) if not failed else rng.choice([1, 2])
                )
            if at < now:
                traces.append(trace)
            at += timedelta(seconds=latency / 1000 + rng.uniform(5, 60))
    return traces


def _steps(
    agent: DemoAgent,
    at: datetime,
    reply_ms: int,
    tool_calls: list[dict],
    input_tokens: int,
    output_tokens: int,
    failed: bool,
) -> list[dict]:
    """The reply's steps, laid out inside its latency: a model call, or a model
    call that plans, the tool call, and a model call that answers. A failed reply
    fails in its tool call (which then runs to the end) or in its model call."""

    def llm(name: str, start: int, length: int, tokens_in: int, tokens_out: int, error: str = "") -> dict:
        return {
            "kind": "llm",
            "name": name,
            "model": agent.model,
            "started_at": (at + timedelta(milliseconds=start)).isoformat(),
            "latency_ms": length,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "error": error,
        }

    if not tool_calls:
        return [llm("chat", 0, reply_ms, input_tokens, output_tokens, "rate limited" if failed else "")]
    call = tool_calls[0]
    call["latency_ms"] = min(call["latency_ms"], reply_ms * 3 // 5)
    plan = (reply_ms - call["latency_ms"]) // 3
    planned_out = output_tokens // 4
    if failed:  # the call hangs until the reply gives up
        call["latency_ms"] = reply_ms - plan
    tool = {
        "kind": "tool",
        "name": call["name"],
        "started_at": (at + timedelta(milliseconds=plan)).isoformat(),
        "latency_ms": call["latency_ms"],
        "error": call["error"],
    }
    steps = [llm("plan", 0, plan, input_tokens, planned_out), tool]
    if not failed:
        answer_at = plan + call["latency_ms"]
        steps.append(llm("answer", answer_at, reply_ms - answer_at, 0, output_tokens - planned_out))
    return steps


def _voice_calls(traces: list[dict], now: datetime) -> list[dict]:
    """Call events for the voice conversations among ``traces``: a call starts a
    few seconds before the agent's first reply, has a turn per reply, and ends
    after the last one. Only conversations at least two hours old (certainly
    over) become calls, so a later run never ends a call differently."""
    replies_by_session: dict[str, list[dict]] = defaultdict(list)
    for t in traces:
        if t["channel"] == "voice":
            replies_by_session[t["session_id"]].append(t)
    events = []
    for session_id, replies in replies_by_session.items():
        first = datetime.fromisoformat(replies[0]["created_at"])
        if first > now - timedelta(hours=2):
            continue
        rng = random.Random(session_id)
        call_id = session_id.replace("sess_", "call_", 1)
        last = datetime.fromisoformat(replies[-1]["created_at"])
        failed = any(r["status"] == "error" for r in replies)
        status = (
            "failed" if failed and rng.random() < 0.5 else "dropped" if rng.random() < 0.04 else "completed"
        )
        events.append(
            {
                "type": "call.started",
                "call_id": call_id,
                "agent_id": replies[0]["agent_id"],
                "session_id": session_id,
                "deployment_version": replies[0]["deployment_version"],
                "at": (first - timedelta(seconds=rng.uniform(2, 8))).isoformat(),
                "from_number": f"+1415555{rng.randint(1000, 9999)}",
                "to_number": "+14155550100",
            }
        )
        for reply in replies:
            events.append(
                {
                    "type": "call.turn",
                    "call_id": call_id,
                    "at": reply["created_at"],
                    "voice_latency_ms": round(rng.lognormvariate(math.log(850), 0.3)),
                    "interrupted": rng.random() < 0.12,
                    "transcription_confidence": round(rng.uniform(0.82, 0.99), 3),
                }
            )
        events.append(
            {
                "type": "call.ended",
                "call_id": call_id,
                "at": (last + timedelta(seconds=rng.uniform(4, 25))).isoformat(),
                "status": status,
            }
        )
    return events


class Command(BaseCommand):
    help = f"Load a demo organisation with {DEFAULT_DAYS} days of traffic (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--org", default="demo")
        parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo")
        parser.add_argument("--scale", type=float, default=1.0, help="multiply the traffic")

    def handle(self, *args, org: str, days: int, username: str, password: str, scale: float, **options):
        organisation = organisation_get_or_create(slug=org, name="Demo Company" if org == "demo" else None)
        user_create_or_update(
            organisation=organisation, username=username, password=password, role=Role.OWNER
        )
        actor = Actor.system("seed_demo")
        now = datetime.now(UTC)
        agents = agents_resolve(
            organisation=organisation, wanted={a.public_id: a.name for a in AGENTS}, actor=actor
        )
        for agent in agents.values():
            self._deployments(agent, now, actor)

        demo = [a if scale == 1.0 else _scaled(a, scale) for a in AGENTS]
        # One hour more than the days asked for: the window of the last `days`
        # days then lies wholly after the first hour of data.
        first_hour = (now - timedelta(days=days, hours=1)).replace(minute=0, second=0, microsecond=0)
        hours = [first_hour + timedelta(hours=h) for h in range(days * 24 + 2)]
        stored = duplicates = calls = 0
        batch: list[dict] = []
        incident = self._incident(agents[INCIDENT_AGENT])
        for hour in tqdm(hours, desc="demo traffic", unit="h", disable=options["verbosity"] == 0):
            for agent in demo:
                batch.extend(_hour_traces(agent, hour, now))
                if agent.public_id == INCIDENT_AGENT and incident and incident[0] <= hour < incident[1]:
                    batch.extend(_hour_traces(agent, hour, now, outage=True))
            if len(batch) >= 500 or hour is hours[-1]:
                for start in range(0, len(batch), 1000):
                    result = trace_ingest(
                        organisation=organisation, items=batch[start : start + 1000], actor=actor
                    )
                    if result.rejected:
                        raise RuntimeError(f"demo data rejected: {result.rejected[:3]}")
                    stored += len(result.stored)
                    duplicates += len(result.duplicates)
                calls += self._calls(organisation, _voice_calls(batch, now), actor)
                batch = []
        events = self._billing(organisation, [h for h in hours if h + timedelta(hours=1) <= now], actor)
        alerts = self._alert_rule(organisation, now, actor)
        self.stdout.write(
            f"Demo organisation '{organisation.slug}': {stored} traces and {calls} voice calls added, "
            f"{duplicates} traces already present, {events} usage events added, "
            f"{alerts} alert events recorded. Log in as {username} / {password}."
        )

    def _incident(self, agent: Agent) -> tuple[datetime, datetime] | None:
        """The outage's hours: from two days after v3 went out (as recorded at the
        first run, so a later run does not move it into hours already loaded)."""
        v3 = Deployment.objects.filter(agent=agent, version="v3").first()
        if v3 is None:
            return None
        start = (v3.deployed_at + INCIDENT_AFTER).replace(minute=0, second=0, microsecond=0)
        return start, start + INCIDENT_LENGTH

    def _alert_rule(self, organisation, now: datetime, actor: Actor) -> int:
        """An example rule on the Sales Caller's error rate, evaluated every three
        hours over the past week of demo traffic (by the real evaluation), so the
        Alerts page shows it firing during the outage and resolving after it.
        Created once."""
        from alerts.models import AlertRule
        from alerts.services import rule_create, rule_evaluate

        if AlertRule.objects.filter(organisation=organisation, name=DEMO_ALERT["name"]).exists():
            return 0
        rule = rule_create(organisation=organisation, data=DEMO_ALERT, actor=actor)
        recorded = 0
        at = now - timedelta(days=7)
        while at <= now:
            rule.refresh_from_db()
            recorded += rule_evaluate(rule=rule, now=at) is not None
            at += timedelta(hours=3)
        return recorded

    def _billing(self, organisation, hours: list[datetime], actor: Actor) -> int:
        """A first top-up, a monthly budget and the booking assistant's web scraping."""
        from billing.models import Budget
        from billing.services import budget_set, topup_record, usage_events_record

        topup_record(
            organisation=organisation,
            amount_usd=Decimal("500.00"),
            reference="demo credit",
            actor=actor,
            idempotency_key="demo-credit",
        )
        if not Budget.objects.filter(organisation=organisation, agent__isnull=True).exists():
            budget_set(organisation=organisation, agent=None, monthly_usd=Decimal("300.00"), actor=actor)
        events = [_hour_scraping(hour) for hour in hours]
        stored = 0
        for start in range(0, len(events), 1000):
            result = usage_events_record(
                organisation=organisation, items=events[start : start + 1000], actor=actor
            )
            stored += len(result.stored)
        return stored

    def _calls(self, organisation, events: list[dict], actor: Actor) -> int:
        """Store call events in batches; returns the number of calls started."""
        started = 0
        for start in range(0, len(events), 1000):
            result = voice_events_ingest(
                organisation=organisation, items=events[start : start + 1000], actor=actor
            )
            if result.rejected:
                raise RuntimeError(f"demo calls rejected: {result.rejected[:3]}")
            duplicates = set(result.duplicates)
            started += sum(1 for e in result.accepted if e.endswith(":started") and e not in duplicates)
        return started

    @transaction.atomic
    def _deployments(self, agent: Agent, now: datetime, actor: Actor) -> None:
        if agent.config == {}:
            model = next(a.model for a in AGENTS if a.public_id == agent.public_id)
            agent = agent_update(
                agent=agent,
                actor=actor,
                config={"instructions": f"You are {agent.name}.", "model": model, "temperature": 0.3},
            )
        existing = set(Deployment.objects.filter(agent=agent).values_list("version", flat=True))
        for version, days_ago, changes, _ in DEPLOYMENTS:
            if version not in existing:
                deployment_create(
                    agent=agent,
                    actor=actor,
                    version=version,
                    changes=changes,
                    deployed_at=now - timedelta(days=days_ago),
                )


# A CRM outage two days after v3 went out: for six hours callers keep trying
# and every one of their replies fails in its tool call. The example alert rule
# fires on it and resolves after it (its threshold is far above the agent's
# usual error rate, and the outage's conversations far outnumber the usual ones).
INCIDENT_AGENT = "agent_sales"
INCIDENT_AFTER = timedelta(days=2)
INCIDENT_LENGTH = timedelta(hours=6)
INCIDENT_CONVERSATIONS = 8  # extra conversations in each hour of the outage, all failing
DEMO_ALERT = {
    "name": "Sales Caller error rate",
    "kind": "error_rate",
    "agent_id": INCIDENT_AGENT,
    "threshold": "0.40",
    "window_minutes": 6 * 60,
    "min_conversations": 10,
    "cooldown_minutes": 60,
    "notify": [],
}


def _hour_scraping(hour: datetime) -> dict:
    """The booking assistant scrapes restaurant pages: busier by day, a cent or so a page."""
    stamp = hour.strftime("%Y%m%d%H")
    rng = random.Random(f"scraping:{stamp}")
    pages = max(1, round(rng.uniform(5, 40) * _daily_curve(hour)))
    return {
        "id": f"scrape_{stamp}",
        "agent_id": "agent_booking",
        "category": "scraping",
        "quantity": pages,
        "unit": "pages",
        "cost_usd": str(Decimal("0.0012") * pages),
        "at": (hour + timedelta(minutes=rng.randint(0, 59))).isoformat(),
    }


def _scaled(agent: DemoAgent, scale: float) -> DemoAgent:
    return replace(agent, conversations_per_hour=agent.conversations_per_hour * scale)
