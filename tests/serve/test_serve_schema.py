"""schemathesis against the server's own OpenAPI schema, on a live server with auth on: generated requests (valid
and schema-violating) never get a 5xx, schema-violating ones get a 4xx, and the schema's declared bearer auth is
really enforced (``ignored_auth``). Bounded: a few examples per operation, tiny generations."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import ignored_auth  # noqa: E402

from rewardloop.serve import ServeConfig, create_app  # noqa: E402
from rewardloop.store import Store  # noqa: E402
from rewardloop.store.keys import ApiKeys  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def secured(tiny_llama, tokenizer, tmp_path_factory, live_server_class):
    db = tmp_path_factory.mktemp("schema-store") / "schema.db"
    with Store.open(url=f"sqlite:///{db}") as store:
        key = ApiKeys(store).create("fuzz", "admin")
        cfg = ServeConfig.model_validate(
            {"serve": {"model_name": "tiny", "auth": True, "max_new_tokens": 4, "max_n": 2, "max_body_bytes": 8192}}
        )
        server = live_server_class(create_app(cfg, model=tiny_llama, tokenizer=tokenizer, store=store)).start()
        yield server, key
        server.stop()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_never_crash_the_server(secured, mode):
    server, key = secured
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/feedback"}
    headers = {"Authorization": f"Bearer {key}"}
    checks = [not_a_server_error, ignored_auth]
    tested: set[str] = set()
    for op in operations:

        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)), operation=st.just(op))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case, operation):
            tested.add(operation.path)
            # a negative case may have made its Authorization header the invalid part: keep that one
            keep = mode == "negative" and "Authorization" in (case.headers or {})
            response = case.call(headers=None if keep else headers)
            case.validate_response(response, checks=checks)
            if mode == "negative":  # schema-violating: refused with a 4xx (413 for an oversized body counts)
                assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])

        try:
            run()
        except Unsatisfiable:  # negative mode: nothing to make invalid (GET /health, /v1/models take no input)
            assert mode == "negative" and op.method.upper() == "GET", op.path
    assert tested >= {"/v1/chat/completions", "/v1/completions", "/v1/feedback", "/v1/feedback/batch"}
