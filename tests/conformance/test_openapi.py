"""Every REST route against the service's own OpenAPI document, with requests generated from it
(schemathesis): no server error, no response that contradicts the document, no actor restarted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conformance.service import Background, background_service


def no_internal_error(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """No 500 (a documented 503 ``unavailable`` or 504 ``timeout`` is an answer, not a fault)."""
    assert response.status_code != 500, f"500 internal: {response.text[:300]}"
    return True


CHECKS = (no_internal_error, status_code_conformance, content_type_conformance, response_schema_conformance)
EXAMPLES = 25  # per operation: about 30 s for every route


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with background_service(tmp_path_factory.mktemp("openapi")) as running:
        yield running


def _operations(service: Background) -> list[schemathesis.APIOperation]:
    api = schemathesis.openapi.from_url(f"{service.url}/api/v1/openapi.json")
    return [result.ok() for result in api.get_all_operations()]


def test_every_route_answers_as_its_document_says(service: Background) -> None:
    failures: dict[str, str] = {}
    operations = _operations(service)
    assert len(operations) > 50
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=service.url, timeout=30)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # collected: every operation is tried, all failures are reported at once
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:1500]
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())


def test_no_actor_restarted_or_failed(service: Background) -> None:
    for name, (state, restarts) in service.restarts().items():
        assert (state, restarts) == ("running", 0), name
