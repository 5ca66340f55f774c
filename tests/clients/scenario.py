"""What every client script does, so the tests know what was sent: a few plain
questions, one tool round trip (the weather in Paris), and one call the model
refuses. Imported by the client scripts (which run in their own virtualenvs)
and by the tests."""

PLAIN_PROMPTS = ["What are your opening hours?", "Do you ship to Canada?", "Can I pay by card?"]
TOOL_PROMPT = "What is the weather in Paris?"
FAILING_PROMPT = "please fail"
TOOL_NAME = "get_weather"
TOOL_RESULT = {"city": "Paris", "sky": "sunny", "celsius": 21}
SYSTEM_PROMPT = "You are a helpful assistant."


def get_weather(city: str) -> dict:
    """The tool: the weather in a city."""
    return dict(TOOL_RESULT, city=city)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

# The caller of the Pipecat voice bot: three utterances, the second interrupted by the third.
UTTERANCES = ["Hello, I need help with my order.", "Where is my parcel right now", "Actually, cancel it."]
