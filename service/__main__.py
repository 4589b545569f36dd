"""`python -m service --host H --port P`: serve the models under the models directory."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import uvicorn
from pydantic import ValidationError
from pydantic_settings import CliSettingsSource

from service import http, request_log
from service.app import create_app
from service.config import Settings
from service.errors import ModelsDirMissing
from service.registry import newest_versions


class Server(uvicorn.Server):
    """uvicorn's server, but a SIGTERM or SIGINT ends in exit status 0 once the graceful stop
    (no new connections, requests in flight finished) is done; uvicorn would re-raise the
    signal and die of it, which orchestrators log as a crash. The app hears of the stop at
    once (its Drain: /readyz fails, and work still running shortly before the grace period
    ends is answered with an error instead of being dropped with its connection)."""

    def __init__(self, config: uvicorn.Config, drain, grace_s: float):
        super().__init__(config)
        self.drain, self.grace_s = drain, grace_s

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            asyncio.get_running_loop().call_soon_threadsafe(self.drain.begin, self.grace_s)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def parse_settings(argv: list[str] | None) -> tuple[Settings, argparse.ArgumentParser]:
    """Every setting is a flag (pydantic-settings builds them, with their help, from Settings);
    a flag wins over its SEQSERVE_<NAME> variable, which wins over the default."""
    parser = argparse.ArgumentParser(
        prog="python -m service", description="Serve the models under the models directory.",
        epilog="Every flag is also an environment variable: --max-queue-size 64 is SEQSERVE_MAX_QUEUE_SIZE=64. "
               "Lists are comma-separated: --api-keys k1,k2.")
    cli = CliSettingsSource(Settings, root_parser=parser, cli_kebab_case=True, cli_implicit_flags=False)
    try:
        return Settings(_cli_settings_source=cli(args=sys.argv[1:] if argv is None else argv)), parser
    except ValidationError as error:  # settings that cannot work together, a value out of range
        parser.exit(2, f"python -m service: {error}\n")


def main(argv: list[str] | None = None) -> int:
    settings, parser = parse_settings(argv)
    request_log.configure(settings.log_level, settings.log_format)
    try:
        newest_versions(settings.models_dir)
    except ModelsDirMissing as error:
        parser.exit(2, f"python -m service: {error}\n")
    # uvicorn's own access log is off: the JSON access line per request replaces it. Connection
    # limits and timeouts: service/http.py. X-Forwarded-For is read only from the proxies named in
    # forwarded_allow_ips; empty, uvicorn's proxy-header middleware is off altogether (its default
    # trusts 127.0.0.1, so any local client could choose its own address).
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            access_log=False, log_level=settings.log_level,
                            timeout_graceful_shutdown=settings.graceful_shutdown_s,
                            http=http.protocol(settings), timeout_keep_alive=settings.keep_alive_timeout_s,
                            proxy_headers=bool(settings.forwarded_allow_ips),
                            forwarded_allow_ips=settings.forwarded_allow_ips)
    server = Server(config, app.state.drain, settings.graceful_shutdown_s)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
