"""A user of the OpenAI Python SDK with an OpenTelemetry instrumentation
(``openai-v2`` or ``openinference``, named by the first argument), configured
as its documentation says, exporting to ``OTEL_EXPORTER_OTLP_ENDPOINT``. The
model is whatever ``OPENAI_BASE_URL`` points at."""

import json
import sys

import openai
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from scenario import FAILING_PROMPT, PLAIN_PROMPTS, SYSTEM_PROMPT, TOOL_PROMPT, WEATHER_TOOL, get_weather

instrumentation = sys.argv[1]
tracer_provider = TracerProvider(resource=Resource.create())
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
logger_provider = LoggerProvider(resource=Resource.create())
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))

if instrumentation == "openai-v2":
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider, logger_provider=logger_provider)
else:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider)

client = openai.OpenAI()
model = "gpt-4o-mini"
system = {"role": "system", "content": SYSTEM_PROMPT}

for prompt in PLAIN_PROMPTS:
    client.chat.completions.create(model=model, messages=[system, {"role": "user", "content": prompt}])

# One tool round trip: the model asks for the tool, the next request carries its result.
messages = [system, {"role": "user", "content": TOOL_PROMPT}]
first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
call = first.choices[0].message.tool_calls[0]
messages.append(first.choices[0].message.model_dump(exclude_none=True))
result = get_weather(**json.loads(call.function.arguments))
messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])

try:
    client.chat.completions.create(
        model=model, messages=[system, {"role": "user", "content": FAILING_PROMPT}]
    )
except openai.BadRequestError:
    pass

assert tracer_provider.force_flush(30_000) and logger_provider.force_flush(30_000)
tracer_provider.shutdown()
logger_provider.shutdown()
