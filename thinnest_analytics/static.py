"""Static files as Daphne serves them (``SERVE_STATIC``), with the headers pages
carry.

Django's ``ASGIStaticFilesHandler`` answers ``/static/`` before the middleware
stack, so its responses lacked ``X-Content-Type-Options``, the Content Security
Policy, ``X-Frame-Options`` and ``Referrer-Policy``. Here each static response
passes through the same header middlewares as a page (also a 404), so one set
of settings decides the headers of both."""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.handlers.exception import convert_exception_to_response
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.csp import ContentSecurityPolicyMiddleware
from django.middleware.security import SecurityMiddleware

# The header middlewares of settings.MIDDLEWARE, outermost first.
HEADER_MIDDLEWARE = (SecurityMiddleware, ContentSecurityPolicyMiddleware, XFrameOptionsMiddleware)


class StaticFilesHandler(ASGIStaticFilesHandler):
    def __init__(self, application) -> None:
        super().__init__(application)
        serve = convert_exception_to_response(super().serve)
        for middleware in reversed(HEADER_MIDDLEWARE):
            serve = middleware(serve)
        self._serve_with_headers = serve

    def serve(self, request):
        return self._serve_with_headers(request)
