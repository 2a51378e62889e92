"""rr_addon.mitm.flows: the error answers clients see."""

from rr_addon.mitm.flows import decision_response, reason_phrase
from rr_addon.core.types import Decision


def test_reason_phrase_is_printable_ascii_and_bounded():
    assert reason_phrase("Forbidden", "unknown-target", "no target for caf\u00e9.test\r\nX: y") == "Forbidden (rr unknown-target: no target for caf?.test??X: y)"
    long = reason_phrase("Bad Request", "invalid-request", "x" * 500)
    assert len(long) <= 200 and long.endswith("...)")


def test_401_challenges_407_asks_the_proxy_credential_and_body_keeps_the_contract_shape():
    import dataclasses
    import json

    r = decision_response(Decision.deny("unauthenticated", "no caller credential presented"), "id-1")
    assert (r.status_code, r.headers["www-authenticate"], "proxy-authenticate" in r.headers) == (401, 'Basic realm="rr"', False)
    doc = json.loads(r.content)
    assert doc["error"] == {"code": "unauthenticated", "message": doc["error"]["message"], "request_id": "id-1"}
    assert doc["message"] == "rr unauthenticated: " + doc["error"]["message"]
    r = decision_response(dataclasses.replace(Decision.deny("unauthenticated", "x"), status=407), "id-2")
    assert (r.status_code, r.headers["proxy-authenticate"], "www-authenticate" in r.headers) == (407, 'Basic realm="rr"', False)
    assert json.loads(r.content)["error"]["message"] == "x; present an rr credential in Proxy-Authorization (the proxy URL's user:key)"
    r = decision_response(Decision.deny("access-denied", "denied by rule"), "id-3")
    assert "www-authenticate" not in r.headers and r.reason == "Forbidden (rr access-denied: denied by rule)"
