"""/docs works without internet: Swagger UI comes from the package, and the OpenAPI
document declares the admin token."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Coordinator

pytestmark = pytest.mark.slow


def test_docs_are_served_from_the_package(coordinator: Coordinator) -> None:
    page = httpx.get(f"{coordinator.http}/docs", timeout=10)
    assert page.status_code == 200
    assert "/static/swagger-ui/swagger-ui-bundle.js" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"):
        got = httpx.get(f"{coordinator.http}/static/swagger-ui/{asset}", timeout=10)
        assert got.status_code == 200 and len(got.content) > 1000, asset
    external = [line for line in page.text.splitlines() if "src=" in line or "href=" in line]
    assert external and all("cdn" not in line and "//" not in line for line in external)
    assert httpx.get(f"{coordinator.http}/redoc", timeout=10).status_code == 404
    schema = httpx.get(f"{coordinator.http}/openapi.json", timeout=10).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create = schema["paths"]["/api/v1/jobs"]["post"]
    assert create["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/api/v1/jobs"]["get"]  # reads are open
