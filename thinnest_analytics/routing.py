"""WebSocket routes, served by Channels beside Django's HTTP views."""

from django.urls import path

from voice.consumers import VoiceMetricsConsumer

websocket_urlpatterns: list = [
    path("api/voice/metrics/<str:agent_id>/ws", VoiceMetricsConsumer.as_asgi()),
]
