"""Issue 10, acceptance: schemathesis against /openapi.json, a bounded run (a few seconds), with the committed
model loaded (schemathesis runs the app's lifespan): no 5xx, every answer matches its documented schema."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
schemathesis = pytest.importorskip("schemathesis", reason="pip install 'vinted-tagger[dev]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# No 5xx and every answer as documented. Not "positive data accepted": a schema-valid upload may still be
# a broken image (422) or over a byte limit (413) that JSON Schema cannot express for binary strings.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
MODEL = Path(__file__).resolve().parents[1] / "artifacts" / "model"
# Examples per operation: enough to reach every error path, few enough to stay well under a minute.
EXAMPLES = 25


@pytest.fixture(scope="module")
def api_schema(lite2_encoder):
    app = create_app(MODEL, Settings(max_files=4, max_file_mb=1, max_request_mb=4))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_api_conforms_to_its_schema(api_schema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/healthz", "/readyz", "/v1/model"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(checks=CHECKS)

        check()
