"""Requests the upstream may read differently from rr's rules (docs/security.md).

Refused with 400 `invalid-request`, before the rules, because no rule can be
written against a request whose meaning depends on the upstream's framework:
- a method override: `X-HTTP-Method-Override`, `X-HTTP-Method`,
  `X-Method-Override` (any value, even the request's own method; `_` for `-`
  too, as CGI-style servers read it) or a
  `_method` query parameter or urlencoded form field. Rails, Laravel, Symfony,
  Express's method-override and many API gateways turn a POST carrying one into
  the method it names, which rules matched as a POST. Names PHP reads as
  `_method` count too (` _method`, `.method`, `_method[]`).
  Form bodies are read for this whatever the rules need (`reads_form`): a
  declared `application/x-www-form-urlencoded` body, and a POST without a
  Content-Type, which Rack (Rails) parses as a form. A `multipart/form-data`
  `_method` part is not looked at: reading every upload whole would refuse
  any file over the inspection limit.
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
from rr_addon.policy.paths import CanonicalPath
from rr_addon.core.types import RequestFacts

OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
OVERRIDE_PARAMETER = "_method"
PATH_OVERRIDE_HEADERS = frozenset({"x-original-url", "x-rewrite-url"})
FORM = "application/x-www-form-urlencoded"


def reads_form(facts: RequestFacts) -> bool:
    """Whether the body may be read upstream as an urlencoded form (so rr reads it for `_method`)."""
    # every value and list member counts: servers differ on which Content-Type they keep
    kinds = {part.split(";", 1)[0].strip().lower() for v in facts.header_values("content-type") for part in v.split(",")}
    # Rack reads a POST whose media type is missing (or empty) as a form
    return FORM in kinds or (facts.method == "POST" and (not kinds or "" in kinds))


def form_refusal(body: bytes) -> str | None:
    """The reason to refuse a form body (already decoded), or None."""
    # latin-1 never fails; escapes are decoded as UTF-8 by parse_qsl, the name is ASCII either way
    return _overrides(body.decode("latin-1"))


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
    if (override := _overrides(path.query)) is not None:
        return override
    if not allow_path_parameters and (";" in path.path or "%3B" in path.path):
        return reasons.PATH_PARAMETERS
    return None


def _overrides(text: str) -> str | None:
    # Parse only text that could spell the name (`%5F` or `%6D…` escapes included).
    if text and ("method" in text.lower() or "%" in text):
        if any(_is_override(name) for name, _ in parse_qsl(text, keep_blank_values=True)):
            return reasons.METHOD_OVERRIDE
    return None


def _is_override(name: str) -> bool:
    # PHP (Laravel, Symfony) drops leading spaces of a name, then reads '.' (and ' ') as '_',
    # and takes `_method[]` / `_method[x]` as the same variable.
    if "method" not in name:
        return False
    return name.lstrip(" ").replace(".", "_").partition("[")[0] == OVERRIDE_PARAMETER
