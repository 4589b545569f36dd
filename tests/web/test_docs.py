"""/docs and /redoc in headless Chromium with every other host blocked: they render the
OpenAPI document from the service's own copies of Swagger UI and ReDoc."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # a real service process and a browser


def test_swagger_ui_works_offline_with_an_authorize_button(page, service):
    page.goto(service.url + "/docs")
    page.locator(".swagger-ui .opblock").first.wait_for(timeout=30_000)
    operations = page.locator(".opblock-summary-operation-id").all_inner_texts() or \
        page.locator(".opblock-summary-path").all_inner_texts()
    assert operations, "the operations are listed"
    for tag in ("sentiment", "translation", "music", "operations"):
        assert page.locator(f'.opblock-tag[data-tag="{tag}"]').count() == 1, tag
    authorize = page.locator("button.authorize")
    assert authorize.is_visible()
    authorize.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    dialog.wait_for()
    text = dialog.inner_text()
    assert "Bearer" in text and "X-API-Key" in text
    loaded = {url.removeprefix(service.url) for url in page.watch.requests}
    assert {"/docs", "/openapi.json", "/static/vendor/swagger-ui/swagger-ui-bundle.js",
            "/static/vendor/swagger-ui/swagger-ui.css"} <= loaded


def test_redoc_works_offline(page, service):
    page.goto(service.url + "/redoc")
    page.locator(".api-content h1").first.wait_for(timeout=30_000)
    assert "seqserve" in page.locator(".api-content h1").first.inner_text()
    assert page.locator("li[data-item-id^='tag/music']").count() >= 1
    loaded = {url.removeprefix(service.url) for url in page.watch.requests}
    assert {"/redoc", "/openapi.json", "/static/vendor/redoc/redoc.standalone.js"} <= loaded
