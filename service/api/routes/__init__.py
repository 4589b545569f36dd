"""The typed endpoints of docs/api.md, a router per resource: each translates HTTP to a call on
its task's model and back."""

from service.api.routes import music, operations, sentiment, translate

ROUTERS = [sentiment.router, translate.router, music.router, operations.router]
