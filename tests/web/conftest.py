"""The pages in a real browser: Debian's headless Chromium driven by playwright, against a real
`python -m service` on loopback with the committed models.

Every request the page makes to any other origin is aborted and fails the test, and so does
any console error or uncaught exception. Where the browser or playwright is missing, the tests
skip and say why (.ci/run installs both).

SEQSERVE_CHROMIUM=<path> picks another Chromium binary; SEQSERVE_SCREENSHOTS=1 makes the
playground test write the screenshots of docs/ (docs/playground.png, docs/playground_music.png).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningService

CHROMIUM = Path(os.environ.get("SEQSERVE_CHROMIUM", "/usr/lib/chromium/chromium-headless-shell"))
STARTUP_S = 120


def _browser_or_skip() -> Path:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        pytest.skip(f"no headless Chromium at {CHROMIUM}: apt-get install chromium-headless-shell "
                    "(or set SEQSERVE_CHROMIUM)")
    return CHROMIUM


def start_service(log: Path, env: dict[str, str] | None = None) -> RunningService:
    """`python -m service` on a free loopback port (its log in `log`), ready: every expected model warmed up."""
    with log.open("wb") as out:
        service = RunningService(env=env, output=out)
    try:
        return service.wait_ready(STARTUP_S)
    except TimeoutError:
        service.stop()
        raise RuntimeError(f"the service was not ready after {STARTUP_S} s:\n{log.read_text()[-3000:]}") from None


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return _browser_or_skip()


# The service and the browser live as long as this package's tests, not the session:
# playwright's sync API keeps an event loop running on the main thread while its browser is
# open (asyncio.run() then fails in any later test), and the service holds every model.
@pytest.fixture(scope="package")
def service(chromium_path, tmp_path_factory) -> RunningService:
    """The service with every model and no API keys, shared by the browser tests."""
    started = start_service(tmp_path_factory.mktemp("web") / "service.log")
    yield started
    started.stop()


@pytest.fixture(scope="package")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium_path))
        yield launched
        launched.close()


@dataclass
class Watch:
    """What a page did that a test must know: requests, the ones to other hosts, console errors."""

    origin: str
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allowed_errors: list[str] = field(default_factory=list)  # substrings of console errors a test provokes

    def check(self) -> None:
        assert not self.foreign, f"requests to other hosts: {self.foreign}"
        unexpected = [e for e in self.errors if not any(a in e for a in self.allowed_errors)]
        assert not unexpected, f"console errors: {unexpected}"


def watched_page(browser, origin: str, **context_options):
    """A page in a fresh context whose every request to anything but `origin` is aborted and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, **context_options)
    watch = Watch(origin)

    def route(route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == origin:
            watch.requests.append(url)
            route.continue_()
        elif parts.scheme in ("data", "blob"):
            route.continue_()
        else:
            watch.foreign.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and watch.errors.append(message.text))
    page.on("pageerror", lambda error: watch.errors.append(f"uncaught: {error}"))
    return context, page, watch


@pytest.fixture()
def page(browser, service):
    context, opened, watch = watched_page(browser, service.url)
    opened.watch = watch
    yield opened
    context.close()
    watch.check()
