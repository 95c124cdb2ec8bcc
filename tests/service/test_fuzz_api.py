"""Schemathesis fuzzes every documented operation of the service's OpenAPI schema against the
real server: no input may cause a 5xx, and every refusal is a JSON error."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from scripted_runner import CARD, ScriptedRunner

from service.app import build_app, build_context
from service.settings import Settings

# The schema depends on the code only, not on the model: build it from an app that never serves.
schema = schemathesis.openapi.from_dict(
    build_app(build_context(Settings(), CARD, ScriptedRunner())).openapi()
)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_is_a_server_error(case, server):
    response = case.call(base_url=server.url, timeout=30)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        if case.path.startswith("/v2"):
            assert isinstance(error, str) and error
        else:
            assert set(error) == {"code", "message", "field"} and error["message"]
