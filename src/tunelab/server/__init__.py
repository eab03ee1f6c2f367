"""The manager's HTTP server: the REST API (and, later, the web portal) on one ASGI app."""

from tunelab.server._app import API, create_app

__all__ = ["API", "create_app"]
