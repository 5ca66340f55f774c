"""WebSocket routes, served by Channels beside Django's HTTP views."""

websocket_urlpatterns: list = []
