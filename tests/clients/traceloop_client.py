"""A user of the OpenAI SDK with OpenLLMetry (``traceloop-sdk``): ``Traceloop.init``
with its tool and workflow decorators, exporting to ``TRACELOOP_BASE_URL``
(this server's ``/api/otel``) with ``TRACELOOP_HEADERS``."""

import json
import os

import openai
from scenario import FAILING_PROMPT, PLAIN_PROMPTS, SYSTEM_PROMPT, TOOL_PROMPT, WEATHER_TOOL
from scenario import get_weather as weather_of
from traceloop.sdk import Traceloop
from traceloop.sdk.decorators import tool, workflow

Traceloop.init(app_name=os.environ["OTEL_SERVICE_NAME"], disable_batch=True, telemetry_enabled=False)
client = openai.OpenAI()
model = "gpt-4o-mini"
system = {"role": "system", "content": SYSTEM_PROMPT}


@tool(name="get_weather")
def get_weather(city: str) -> dict:
    return weather_of(city)


@workflow(name="weather")
def weather(question: str) -> str:
    messages = [system, {"role": "user", "content": question}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    result = get_weather(**json.loads(call.function.arguments))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    answer = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    return answer.choices[0].message.content


for prompt in PLAIN_PROMPTS:
    client.chat.completions.create(model=model, messages=[system, {"role": "user", "content": prompt}])
weather(TOOL_PROMPT)
try:
    client.chat.completions.create(
        model=model, messages=[system, {"role": "user", "content": FAILING_PROMPT}]
    )
except openai.BadRequestError:
    pass
Traceloop.flush() if hasattr(Traceloop, "flush") else None
