"""No URL rr prints repeats its user info: a password in an identity endpoint
URL (refused by `rr apply`) or in the URL given to `rr explain` stays out of
the messages."""

from __future__ import annotations

import pytest

from rr_addon.settings import without_userinfo
from rr_addon.testing.home import rr_cli

POLICY = """
targets:
  - name: api
    hosts: ["api.example.com"]
    credentials:
      - {name: oauth, kind: oauth2_client_credentials, token_url: "https://u:tok-PASSWORD@idp.example/token", client_id: rr, client_secret: x}
  - name: other
    hosts: ["other.example.com"]
    credentials: [{name: k, kind: bearer, secret: sk_x}]
proxies:
  - name: agents
    targets: [{target: other}]
    credentials:
      - name: opaque
        auth: oauth2
        introspection_url: "https://rr:intro-PASSWORD@idp.example/introspect"
        client_id: rr
        client_secret: rr-client-secret
      - name: j
        auth: jwt_verify
        jwks_url: "http://a:jwks-PASSWORD@127.0.0.1:1/jwks#frag"
        issuer: x
        audience: api
      - {name: key, auth: api_key, secret: KEY_1}
"""


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://rr:s3cret@idp.example/introspect", "https://***@idp.example/introspect"),
        ("https://only-user@idp.example/", "https://***@idp.example/"),
        ("https://u:p@ss@idp.example/x", "https://***@idp.example/x"),  # a raw @ in the password
        ("//u:p@idp.example", "//***@idp.example"),
        ("https://idp.example/a?b=c", "https://idp.example/a?b=c"),
        ("not a url", "not a url"),
    ],
)
def test_without_userinfo(url, shown):
    assert without_userinfo(url) == shown


def test_apply_errors_never_echo_a_password_in_an_endpoint_url(tmp_path):
    rr_cli(tmp_path, "init")
    (tmp_path / "p.yaml").write_text(POLICY)
    r = rr_cli(tmp_path, "apply", "-f", str(tmp_path / "p.yaml"), check=False)
    assert r.exit_code == 1
    assert "PASSWORD" not in r.output
    for field in ("token_url", "introspection_url", "jwks_url"):
        assert f"{field}: " in r.output and "credentials do not belong in the URL" in r.output
    assert "'https://***@idp.example/introspect'" in r.output


def test_rr_explain_never_echoes_a_password_in_its_url(tmp_path):
    rr_cli(tmp_path, "init")
    text = """
targets:
  - name: other
    hosts: ["other.example.com"]
    credentials: [{name: k, kind: bearer, secret: sk_x}]
proxies:
  - name: agents
    targets: [{target: other}]
    credentials: [{name: key, auth: api_key, secret: KEY_1}]
"""
    (tmp_path / "p.yaml").write_text(text)
    rr_cli(tmp_path, "apply", "-f", str(tmp_path / "p.yaml"))
    r = rr_cli(tmp_path, "explain", "--credential", "agents/key", "GET", "https://u:url-PASSWORD@other.example.com/x", check=False)
    assert "other.example.com/x" in r.output and "PASSWORD" not in r.output
    r = rr_cli(tmp_path, "explain", "--credential", "agents/key", "GET", "ftp://u:url-PASSWORD@other.example.com/x", check=False)
    assert r.exit_code != 0 and "is not an http(s) URL" in r.output and "PASSWORD" not in r.output
