"""Memory the snapshot keeps per combination of scopes (docs/performance.md: Memory):
pipelines are cached per (proxy, caller, target, credential), but the redactors
in them are compiled once per distinct list of `redact:` entries and shared.
Each compiled redactor holds ~0.3 MB of native RE2 programs; before this, every
(proxy, target) pair traffic met compiled its own and the RSS grew with them."""

from rr_addon.testing.snapshots import snapshot_from


def policy(targets: int) -> dict:
    redact = [{"detectors": ["email", "secret"], "action": "mask", "direction": "both"}]
    return {
        "targets": [{"name": f"t{i}", "hosts": [f"api{i}.example.com"]} for i in range(targets)],
        "proxies": [
            {
                "name": name,
                "targets": [{"target": f"t{i}"} for i in range(targets)],
                "redact": [dict(redact[0], description=f"{name}'s")] if name != "other" else [dict(redact[0], action="hash")],
                "credentials": [{"name": f"c{n}", "auth": "api_key", "secret": f"KEY_{name}_{n}"} for n in range(3)],
            }
            for name in ("a", "b", "other")
        ],
    }


def test_pipelines_share_one_redactor_per_distinct_list_of_entries():
    snap = snapshot_from(policy(40))
    pipelines = [snap.pipeline(caller, snap.targets[f"t{i}"], None) for caller in snap.by_token.values() for i in range(40)]
    assert len({id(p) for p in pipelines}) == 3 * 40  # one pipeline per (proxy, target): as before
    response = {id(p.response_redactor) for p in pipelines}
    request = {id(p.request_redactor) for p in pipelines}
    assert len(response) == 2 and len(request) == 2  # a and b share (descriptions differ only); "other" hashes
    a = snap.pipeline(next(c for c in snap.by_token.values() if c.proxy == "a"), snap.targets["t0"], None)
    other = snap.pipeline(next(c for c in snap.by_token.values() if c.proxy == "other"), snap.targets["t0"], None)
    assert a.response_redactor is not other.response_redactor
    assert a.response_redactor.redact_text("x@example.com") == ("[REDACTED:EMAIL]", {"email": 1})
    assert other.response_redactor.redact_text("x@example.com")[0].startswith("[EMAIL:")
