"""`rr usage reset` on the control plane (locally and with --server) reaches a
hybrid data plane's own counters: real processes, a real TLS upstream."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.hybrid import ControlPlaneProcess, dataplane, state
from rr_addon.testing.wait import eventually

from tests.hybrid.test_hybrid_e2e import CALLER_KEY, SECRET_1, get, issue, policy

pytestmark = pytest.mark.e2e

LIMIT = 2


def metered(port: int) -> str:
    return policy(port, SECRET_1).replace(
        "    credentials:\n      - {name: a, auth: api_key", f"    meters: [{{name: requests, limits: {{day: {LIMIT}}}}}]\n    credentials:\n      - {{name: a, auth: api_key"
    )


def up_to_the_limit(dp, upstream, tag: str) -> None:
    for i in range(LIMIT):
        r = get(dp, upstream, f"/{tag}/{i}")
        assert r.status_code == 200, r.text
    refused = get(dp, upstream, f"/{tag}/over")
    assert refused.status_code == 429, refused.text


def last_reset(dp_home: Path):
    return state(dp_home).get("usage_reset")


def test_usage_reset_on_the_control_plane_reaches_a_hybrid_data_plane(tmp_path, pki, upstream):
    text = metered(upstream.port)
    assert "meters: [{name: requests" in text
    home = prepare_home(tmp_path / "cp", text)
    with ControlPlaneProcess(home) as cp:
        bundle = issue(home, "dp1", cp.url, tmp_path)
        admin = tmp_path / "ops.rr-admin.json"
        rr_cli(home, "control-plane", "issue-admin", "ops", "--url", cp.url, "-o", str(admin))
        dp = dataplane(tmp_path / "dp1", bundle, upstream_ca=pki.ca_cert, name="dp1")
        with dp:
            eventually(lambda: "usage_reset" in state(dp.home), what="the data plane's first heartbeat")
            before = last_reset(dp.home)
            up_to_the_limit(dp, upstream, "first")

            # on the control plane itself
            out = rr_cli(home, "usage", "reset", "--proxy", "agent", "--yes").output
            assert "1 hybrid data plane(s) apply it" in out, out
            first = eventually(lambda: last_reset(dp.home) not in (None, before) and last_reset(dp.home), what="the reset at the data plane")
            assert get(dp, upstream, "/after-local").status_code == 200

            # with --server, from an operator's machine
            r = get(dp, upstream, "/fill")
            assert r.status_code == 200, r.text
            assert get(dp, upstream, "/over-again").status_code == 429
            work = tmp_path / "operator"
            work.mkdir()
            out = rr_cli(work, "usage", "reset", "--server", cp.url, "--admin", str(admin), "--proxy", "agent", "--meter", "requests", "--yes").output
            assert "on " + cp.url in out, out
            second = eventually(lambda: (last_reset(dp.home) or 0) > first and last_reset(dp.home), what="the --server reset at the data plane")
            up_to_the_limit(dp, upstream, "second")

        # a restarted data plane is told every recent reset again, but applies none twice:
        # the counters it had at the limit stay at the limit
        with dataplane(tmp_path / "dp1", bundle, upstream_ca=pki.ca_cert, name="dp1") as again:
            eventually(lambda: last_reset(again.home) == second, what="the restarted data plane's first heartbeat")
            assert get(again, upstream, "/after-restart").status_code == 429

        rows = [json.loads(line) for line in rr_cli(home, "usage", "--json", "--proxy", "agent").output.splitlines()]
        assert rows


def test_usage_reset_with_server_names_an_unknown_proxy_clearly(tmp_path, upstream):
    home = prepare_home(tmp_path / "cp", metered(upstream.port))
    with ControlPlaneProcess(home) as cp:
        admin = tmp_path / "ops.rr-admin.json"
        rr_cli(home, "control-plane", "issue-admin", "ops", "--url", cp.url, "-o", str(admin))
        r = rr_cli(tmp_path, "usage", "reset", "--server", cp.url, "--admin", str(admin), "--proxy", "nope", "--yes", check=False)
        assert r.exit_code != 0
        assert "no proxy 'nope'" in r.output


@pytest.mark.services
def test_data_planes_sharing_redis_apply_a_reset_once_between_them(tmp_path, pki, upstream, redis_url):
    """A data plane that joins a region later is told the recent resets, but the
    region's Redis already applied them: it must not wipe what was counted since."""
    import uuid

    proxy = f"region{uuid.uuid4().hex[:8]}"  # keys of its own in the shared Redis database
    home = prepare_home(tmp_path / "cp", metered(upstream.port).replace("name: agent", f"name: {proxy}"))
    with ControlPlaneProcess(home) as cp:
        b1, b2 = issue(home, "r1", cp.url, tmp_path), issue(home, "r2", cp.url, tmp_path)
        d1 = dataplane(tmp_path / "r1", b1, upstream_ca=pki.ca_cert, name="r1")
        d1.env.update({"RR_REDIS_URL": redis_url})

        def limited(dp, path: str) -> int:
            with httpx.Client(proxy=dp.url(proxy, CALLER_KEY), verify=ssl.create_default_context(cafile=dp.ca), timeout=15) as c:
                return c.get(f"https://127.0.0.1:{upstream.port}{path}").status_code

        with d1:
            eventually(lambda: "usage_reset" in state(d1.home), what="r1's first heartbeat")
            assert [limited(d1, f"/a/{i}") for i in range(LIMIT + 1)] == [200] * LIMIT + [429]
            rr_cli(home, "usage", "reset", "--proxy", proxy, "--yes")
            reset = eventually(lambda: state(d1.home).get("usage_reset"), what="the reset at r1")
            assert [limited(d1, f"/b/{i}") for i in range(LIMIT + 1)] == [200] * LIMIT + [429]

            d2 = dataplane(tmp_path / "r2", b2, upstream_ca=pki.ca_cert, name="r2")
            d2.env.update({"RR_REDIS_URL": redis_url})
            with d2:
                eventually(lambda: state(d2.home).get("usage_reset") == reset, what="r2 told of the reset")
                assert limited(d2, "/c") == 429  # r2 did not apply it again to the shared counters
                assert limited(d1, "/d") == 429
