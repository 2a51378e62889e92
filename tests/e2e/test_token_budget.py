"""`rr token mint --max-requests N` through real `rr run` processes: a burst of
concurrent requests admits exactly N — in one data plane (embedded counters)
and across two data planes sharing Redis — the (N+1)th gets 429
quota-exceeded, scope token, without a Retry-After; requests the narrowing or
the parent's rules refuse use none of the budget."""

from __future__ import annotations

import ssl
import threading
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess
from tests.e2e.test_tokens import POLICY, call, minted


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-token-budget")
    prepare_home(home, POLICY.format(port=upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.upstream_port = upstream.port
        yield p


def burst(proxies, token, path, port, per_thread, threads_per_proxy) -> list[httpx.Response]:
    """Concurrent clients, each with its own connection, released together."""
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(len(proxies) * threads_per_proxy)

    def client(p):
        verify = ssl.create_default_context(cafile=str(p.ca))
        with httpx.Client(proxy=p.url("agent", token), verify=verify, timeout=30) as c:
            start.wait()
            for _ in range(per_thread):
                r = c.get(f"https://127.0.0.1:{port}{path}")
                with lock:
                    answers.append(r)

    workers = [threading.Thread(target=client, args=(p,)) for p in proxies for _ in range(threads_per_proxy)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return answers


def check_refusals(answers, admitted: int) -> None:
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == admitted, statuses
    refused = [r for r in answers if r.status_code != 200]
    assert refused and all(r.status_code == 429 for r in refused), statuses
    for r in refused:
        error = r.json()["error"]
        assert error["code"] == "quota-exceeded" and "--max-requests are used up" in error["message"] and "token" in error["message"]
        assert "retry-after" not in r.headers  # it never resets: the token expires first


def test_a_concurrent_burst_admits_exactly_n(proxy, upstream):
    token = minted(proxy, "--ttl", "1h", "--max-requests", "7")
    marker = uuid.uuid4().hex
    answers = burst([proxy], token, f"/burst/{marker}", proxy.upstream_port, per_thread=5, threads_per_proxy=6)
    assert len(answers) == 30
    check_refusals(answers, 7)
    assert len([r for r in upstream.received if marker in r.path]) == 7  # the upstream received exactly N
    # the parent, and another child, are not limited by this token's budget
    assert call(proxy, "KEY_parent", "GET", "/parent-unlimited").status_code == 200
    assert call(proxy, minted(proxy, "--ttl", "1h", "--max-requests", "1"), "GET", "/other-child").status_code == 200


def test_refused_requests_use_none_of_the_budget(proxy):
    token = minted(proxy, "--ttl", "1h", "--max-requests", "2", "--allow", "* /ok/*")
    for _ in range(3):
        assert call(proxy, token, "GET", "/elsewhere").status_code == 403  # the token's narrowing
        assert call(proxy, token, "DELETE", "/ok/x").status_code == 403  # the parent's rule
    assert [call(proxy, token, "GET", f"/ok/{i}").status_code for i in range(3)] == [200, 200, 429]


def test_two_data_planes_share_one_exact_budget_through_redis(tmp_path, upstream, pki, redis_url):
    home = tmp_path / "shared"
    prepare_home(home, POLICY.format(port=upstream.port))
    env = {"RR_REDIS_URL": redis_url}
    with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, name="a") as one, ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, name="b") as two:
        one.upstream_port = upstream.port
        token = minted(one, "--ttl", "1h", "--max-requests", "11")
        marker = uuid.uuid4().hex
        answers = burst([one, two], token, f"/shared/{marker}", upstream.port, per_thread=5, threads_per_proxy=4)
        assert len(answers) == 40
        check_refusals(answers, 11)
        assert len([r for r in upstream.received if marker in r.path]) == 11
