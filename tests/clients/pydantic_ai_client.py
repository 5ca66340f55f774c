"""A pydantic-ai agent with its built-in OpenTelemetry instrumentation
(``Agent.instrument_all()``), exporting to ``OTEL_EXPORTER_OTLP_ENDPOINT``. The
model is an OpenAI-compatible server at ``OPENAI_BASE_URL``."""

import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from scenario import FAILING_PROMPT, PLAIN_PROMPTS, SYSTEM_PROMPT, TOOL_PROMPT, get_weather

provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
Agent.instrument_all()

model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=os.environ["OPENAI_BASE_URL"]))
chat = Agent(model, name="support", instructions=SYSTEM_PROMPT)
weather = Agent(model, name="weather", instructions=SYSTEM_PROMPT, tools=[get_weather])

for prompt in PLAIN_PROMPTS:
    chat.run_sync(prompt)
weather.run_sync(TOOL_PROMPT)
try:
    chat.run_sync(FAILING_PROMPT)
except ModelHTTPError:
    pass

assert provider.force_flush(30_000)
provider.shutdown()
