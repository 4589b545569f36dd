"""The pages a person opens: the playground at `/`, and `/docs` (Swagger UI) and `/redoc`
rendering /openapi.json. Every file they load comes from the service itself (service/static/:
our page, and the pinned libraries under vendor/ and the piano samples under soundfont/,
refreshed by scripts/refresh_web_assets), so they work on a host without internet access.

These paths are open without an API key, are not rate limited and never reach a model (see
`OPEN_PATHS` in security.py); the playground asks for a key itself when the service has keys.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/static"
DOCS_PATHS = {"/", "/docs", "/docs/oauth2-redirect", "/redoc"}  # besides /openapi.json and the static files

router = APIRouter(include_in_schema=False)

# The browser's own guard: these pages may load and call nothing but this service. (Inline
# styles: abcjs's SVG, Swagger UI, Redoc; inline script: FastAPI's docs templates start their
# library with one; a blob: worker: Redoc's search.)
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; font-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob: data:; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'self'; ")
CSP = {"playground": _CSP + "script-src 'self'",
       "docs": _CSP + "script-src 'self' 'unsafe-inline'",
       "redoc": _CSP + "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:"}


def _guarded(response: HTMLResponse, page: str) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CSP[page]
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@cache
def _playground(keys: bool) -> str:
    """index.html, told whether the service asks for an API key (the page then shows a key field)."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return html.replace('data-api-keys="off"', f'data-api-keys="{"on" if keys else "off"}"', 1)


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/")
async def playground(request: Request) -> HTMLResponse:
    return _guarded(HTMLResponse(_playground(bool(request.app.state.settings.api_keys)),
                                 headers={"Cache-Control": "no-cache"}), "playground")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return _guarded(get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url, title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{STATIC_PREFIX}/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_PREFIX}/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_PREFIX}/favicon.svg",
        oauth2_redirect_url=root + "/docs/oauth2-redirect",
        # validatorUrl: never send the document to swagger.io's validator
        swagger_ui_parameters={"validatorUrl": None}), "docs")


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return _guarded(get_swagger_ui_oauth2_redirect_html(), "docs")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return _guarded(get_redoc_html(openapi_url=root + request.app.openapi_url, title=f"{request.app.title} - ReDoc",
                                   redoc_js_url=f"{root}{STATIC_PREFIX}/vendor/redoc/redoc.standalone.js",
                                   redoc_favicon_url=f"{root}{STATIC_PREFIX}/favicon.svg", with_google_fonts=False),
                    "redoc")


def install(app: FastAPI) -> None:
    """The pages' routes and the static files. The app must be made with docs_url=None and
    redoc_url=None, so that FastAPI's own (CDN-loading) docs are not there."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's docs load their scripts from a CDN"
    app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
