"""A Pipecat voice bot with Pipecat's built-in tracing (``pipecat-ai[tracing]``),
exporting to ``OTEL_EXPORTER_OTLP_ENDPOINT``. Its LLM is OpenAI's service
pointed at ``OPENAI_BASE_URL``; the caller's speech and the bot's audio output
are test frames (no microphone, no speaker): three utterances, the second one
interrupted by the third while the bot is speaking."""

import asyncio
import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.tracing.setup import setup_tracing
from scenario import SYSTEM_PROMPT, UTTERANCES

CALL_ID = os.environ.get("CALL_ID", "pipecat-call-1")
PLAYBACK_SECONDS = 0.6


class Speaker(FrameProcessor):
    """The bot's audio output: it speaks while audio frames come, and stops after
    the reply has played (or at once when the caller interrupts)."""

    def __init__(self) -> None:
        super().__init__()
        self.speaking = False
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self._playback: asyncio.Task | None = None

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and not self.speaking:
            self.speaking = True
            await self._announce(BotStartedSpeakingFrame())
            self.started.set()
        elif isinstance(frame, LLMFullResponseEndFrame) and self.speaking:
            self._playback = asyncio.create_task(self._play_then_stop())
        elif isinstance(frame, (InterruptionFrame, UserStartedSpeakingFrame)) and self.speaking:
            if self._playback:
                self._playback.cancel()
            await self._stop()
        await self.push_frame(frame, direction)

    async def _play_then_stop(self) -> None:
        await asyncio.sleep(PLAYBACK_SECONDS)
        await self._stop()

    async def _stop(self) -> None:
        if self.speaking:
            self.speaking = False
            await self._announce(BotStoppedSpeakingFrame())
            self.stopped.set()

    async def _announce(self, frame) -> None:
        await self.push_frame(frame, FrameDirection.DOWNSTREAM)
        await self.push_frame(type(frame)(), FrameDirection.UPSTREAM)


class Voice(FrameProcessor):
    """A text-to-speech stand-in: a short audio frame for each piece of text."""

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            await self.push_frame(TTSAudioRawFrame(audio=b"\x00" * 640, sample_rate=16000, num_channels=1))


def caller_says(text: str, context: LLMContext) -> list:
    context.add_message({"role": "user", "content": text})
    return [
        VADUserStartedSpeakingFrame(),
        UserStartedSpeakingFrame(),
        TranscriptionFrame(text=text, user_id="caller", timestamp=""),
        VADUserStoppedSpeakingFrame(),
        UserStoppedSpeakingFrame(),
        LLMContextFrame(context=context),
    ]


async def main() -> None:
    setup_tracing(service_name=os.environ["OTEL_SERVICE_NAME"], exporter=OTLPSpanExporter())
    llm = OpenAILLMService(model="gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-test")
    speaker = Speaker()
    task = PipelineTask(
        Pipeline([llm, Voice(), speaker]),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        enable_tracing=True,
        conversation_id=CALL_ID,
    )
    turns_ended: asyncio.Queue = asyncio.Queue()

    @task.turn_tracking_observer.event_handler("on_turn_ended")
    async def on_turn_ended(tracker, turn_number, duration, was_interrupted):
        await turns_ended.put(turn_number)

    async def converse() -> None:
        context = LLMContext([{"role": "system", "content": SYSTEM_PROMPT}])
        speaker.stopped.clear()
        await task.queue_frames(caller_says(UTTERANCES[0], context))
        await speaker.stopped.wait()
        speaker.started.clear()
        await task.queue_frames(caller_says(UTTERANCES[1], context))
        await speaker.started.wait()  # the caller talks over the bot
        speaker.stopped.clear()
        await task.queue_frames(caller_says(UTTERANCES[2], context))
        await speaker.stopped.wait()
        while await turns_ended.get() < 3:  # the last turn ends once the bot has been quiet a while
            pass
        await task.queue_frame(EndFrame())

    await asyncio.gather(PipelineRunner(handle_sigint=False).run(task), converse())
    from opentelemetry import trace

    assert trace.get_tracer_provider().force_flush(30_000)


asyncio.run(main())
