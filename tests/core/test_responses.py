import gzip
import json

import pytest

from rr_addon.policy.filters_schema import RedactEntry
from rr_addon.policy.filters import compile_filter
from rr_addon.policy.redact import compile_redactor
from rr_addon.core.reasons import RESPONSE_BODY_UNSCRUBBABLE
from rr_addon.core.responses import EMPTY, BodyCollector, Pipeline, process_response
from rr_addon.policy.scrub import replacement_pairs
from rr_addon.core import reasons

MASK = compile_redactor([RedactEntry(detectors=["email"])], key=b"k", direction="response")
FILTER = Pipeline(filters=(compile_filter(destroy_paths=["$.secret"]),))
REDACT = Pipeline(response_redactor=MASK)
SCRUB = replacement_pairs(["sk_live_abcdefghijklmnop"], "[rr:api/live]")
DOC = b'{"secret": 1, "mail": "a@example.com", "n": 0.10}'


def run(p, body, status=200, ctype="application/json", enc=None, scrub=(), limit=10_000):
    return process_response(p, status, ctype, enc, body, scrub, limit)


@pytest.mark.parametrize(
    "pipeline, kw, body, code, reason",
    [
        pytest.param(FILTER, {}, DOC, None, None, id="json-filtered"),
        pytest.param(FILTER, {"ctype": "text/plain"}, b"hi", "unfilterable-response", reasons.RESPONSE_NOT_JSON, id="text-with-filters"),
        pytest.param(FILTER, {}, b"{oops", "unfilterable-response", reasons.RESPONSE_NOT_JSON, id="broken-json-with-filters"),
        pytest.param(FILTER, {"enc": "gzip"}, b"not gzip", "unfilterable-response", reasons.RESPONSE_NOT_DECODABLE, id="corrupt-gzip"),
        pytest.param(FILTER, {"enc": "gzip", "limit": 100}, gzip.compress(b"[" + b"0," * 1000 + b"0]"), "response-too-large", reasons.RESPONSE_TOO_LARGE, id="bomb-capped"),
        pytest.param(REDACT, {"ctype": "image/png"}, b"a@example.com", None, None, id="binary-untouched"),
        # nothing to filter, but a secret could be echoed: what rr cannot decode it cannot scrub
        pytest.param(EMPTY, {"enc": "gzip", "scrub": SCRUB}, b"not gzip", "upstream-unavailable", RESPONSE_BODY_UNSCRUBBABLE, id="corrupt-gzip-scrubbed"),
        pytest.param(EMPTY, {"enc": "x-custom", "scrub": SCRUB}, b"sk_live_abcdefghijklmnop", "upstream-unavailable", RESPONSE_BODY_UNSCRUBBABLE, id="unknown-coding-scrubbed"),
        pytest.param(EMPTY, {"enc": "x-custom"}, b"anything", None, None, id="unknown-coding-no-secret"),
    ],
)
def test_outcomes(pipeline, kw, body, code, reason):
    out = run(pipeline, body, **kw)
    if code is None:
        assert out.decision is None
    else:
        assert (out.decision.code, out.decision.reason) == (code, reason)


def test_filters_only_on_2xx_and_numbers_stay_exact():
    out = run(FILTER, DOC)
    assert out.body == b'{"mail":"a@example.com","n":0.10}'
    assert run(FILTER, DOC, status=500).body == DOC  # error bodies are not filtered


def test_redaction_counts_and_text_fallback():
    out = run(REDACT, DOC)
    assert json.loads(out.body)["mail"] == "[REDACTED:EMAIL]" and out.redactions == {"email": 1}
    out = run(REDACT, b"not json a@example.com")  # labelled JSON, is text: still redacted
    assert out.body == b"not json [REDACTED:EMAIL]"


def test_echoed_secret_scrubbed_even_when_json_escaped():
    body = b'{"echo": "Bearer \\u0073k_live_abcdefghijklmnop"}'
    out = run(Pipeline(), body, scrub=SCRUB)
    assert b"sk_live" not in out.body and b"[rr:api/live]" in out.body


def test_collector_keeps_nothing_over_the_limit():
    c = BodyCollector(10)
    assert c(b"12345") == b"" and c(b"67890") == b"" and not c.over
    c(b"x")
    assert c.over and bytes(c.buf) == b"" and c.count == 11


@pytest.mark.parametrize(
    "ctype",
    [None, "application/x-ndjson", "application/xml", "application/csv", "application/yaml", "application/vnd.github.raw", "message/http"],
)
def test_a_label_rr_does_not_know_is_redacted_as_text(ctype):
    # an upstream (or a caller asking it for another format) must not step around redaction by its Content-Type
    assert Pipeline(response_redactor=MASK).applies(200, ctype)
    out = run(REDACT, b'{"mail":"a@example.com"}\n{"mail":"b@example.com"}\n', ctype=ctype)
    assert out.body == b'{"mail":"[REDACTED:EMAIL]"}\n{"mail":"[REDACTED:EMAIL]"}\n' and out.redactions == {"email": 2}


@pytest.mark.parametrize("ctype", ["image/png", "application/octet-stream", "application/zip", "video/mp4", "binary/octet-stream", "application/grpc+proto", "application/x-git-upload-pack-result"])
def test_binary_bodies_pass_untouched(ctype):
    assert not Pipeline(response_redactor=MASK).applies(200, ctype)
    assert run(REDACT, b"a@example.com", ctype=ctype).body in (None, b"a@example.com")  # None: the original goes on
