"""A step's input or output that is its trace's own input or output (the same
text: an LLM call's prompt and reply are often the trace's) is stored once, on
the trace. The step row keeps None there and says so in ``texts_from_trace``;
every read of steps goes through ``steps_with_texts``, which puts the text back."""

from collections.abc import Iterable
from typing import Any

INPUT_FROM_TRACE = 1
OUTPUT_FROM_TRACE = 2
# The step fields after trace and position, in ``STEP_FIELDS`` order, that come from the step itself.
_OWN_FIELDS = (
    "span_id",
    "parent_span_id",
    "kind",
    "name",
    "started_at",
    "latency_ms",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)


def _same_text(step_text: Any, trace_text: str) -> bool:
    return isinstance(step_text, str) and step_text != "" and step_text == trace_text


def step_texts(
    step_input: Any, step_output: Any, *, trace_input: str, trace_output: str
) -> tuple[Any, Any, int]:
    """(input, output, texts_from_trace) as a step row stores them."""
    shared = 0
    if _same_text(step_input, trace_input):
        step_input, shared = None, shared | INPUT_FROM_TRACE
    if _same_text(step_output, trace_output):
        step_output, shared = None, shared | OUTPUT_FROM_TRACE
    return step_input, step_output, shared


def step_values(step: dict, *, trace_input: str, trace_output: str) -> tuple:
    """A step (a dict of its fields) as the values of ``STEP_FIELDS`` after trace
    and position, up to the trace's time (which the caller adds)."""
    step_input, step_output, shared = step_texts(
        step["input"], step["output"], trace_input=trace_input, trace_output=trace_output
    )
    return (
        *(step[f] for f in _OWN_FIELDS),
        step_input,
        step_output,
        step["error"],
        step["attributes"],
        shared,
    )


def steps_with_texts(trace, steps: Iterable) -> list:
    """Steps (rows or dicts) of ``trace`` with the texts they share with it put back."""
    out = []
    for step in steps:
        if isinstance(step, dict):
            shared = step.get("texts_from_trace", 0)
            if shared & INPUT_FROM_TRACE:
                step["input"] = _text_of(trace, "input")
            if shared & OUTPUT_FROM_TRACE:
                step["output"] = _text_of(trace, "output")
        else:
            if step.texts_from_trace & INPUT_FROM_TRACE:
                step.input = trace.input
            if step.texts_from_trace & OUTPUT_FROM_TRACE:
                step.output = trace.output
        out.append(step)
    return out


def _text_of(trace, name: str) -> str:
    return trace[name] if isinstance(trace, dict) else getattr(trace, name)
