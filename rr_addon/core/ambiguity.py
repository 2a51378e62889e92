"""Requests the upstream may read differently from rr's rules (CONTRACT §11).

Refused with 400 `invalid-request`, before the rules, because no rule can be
written against a request whose meaning depends on the upstream's framework:
- a method override: `X-HTTP-Method-Override`, `X-HTTP-Method`,
  `X-Method-Override` (any value, even the request's own method; `_` for `-`
  too, as CGI-style servers read it) or a
  `_method` query parameter. Rails, Laravel, Symfony, Express's
  method-override and many API gateways turn a POST carrying one into the
  method it names, which rules matched as a POST. (A `_method` field in a form
  body is not looked at: rr may decide before reading the body.)
- a path override: `X-Original-URL`, `X-Rewrite-URL` (any value; `_` for `-`
  too). IIS URL Rewrite, Zend and older Symfony route the request to the path
  they name, which rules never saw.
- `;` parameters in a path segment (raw or `%3B`) unless the target sets
  `allow_path_parameters`: Tomcat, Spring, Jetty and others strip them, so
  `/v1/customers;x/cus_1` reaches the handler of `/v1/customers/cus_1` while
  rules saw another path. (`..;` is refused by `paths` whatever the target.)
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from rr_addon.core import reasons
from rr_addon.core.paths import CanonicalPath
from rr_addon.core.types import RequestFacts

OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
OVERRIDE_PARAMETER = "_method"
PATH_OVERRIDE_HEADERS = frozenset({"x-original-url", "x-rewrite-url"})


def refusal(facts: RequestFacts, path: CanonicalPath, allow_path_parameters: bool) -> str | None:
    """The reason to refuse the request, or None."""
    # CGI/WSGI servers read `_` in a header name as `-` (both become HTTP_X_HTTP_METHOD_OVERRIDE).
    for name, _ in facts.headers:
        if "-" in name or "_" in name:
            name = name.replace("_", "-")
            if name in OVERRIDE_HEADERS:
                return reasons.METHOD_OVERRIDE
            if name in PATH_OVERRIDE_HEADERS:
                return reasons.PATH_OVERRIDE
    query = path.query
    # Parse only a query that could spell the name (`%5F` or `%6D…` escapes included).
    if query and ("method" in query.lower() or "%" in query):
        if any(name == OVERRIDE_PARAMETER for name, _ in parse_qsl(query, keep_blank_values=True)):
            return reasons.METHOD_OVERRIDE
    if not allow_path_parameters and (";" in path.path or "%3B" in path.path):
        return reasons.PATH_PARAMETERS
    return None
