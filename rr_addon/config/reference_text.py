"""The words of the policy reference (docs/policy.md): one sentence per field,
an introduction and an example per object. Types, defaults, allowed values and
constraints come from the models (rr_addon.config.reference); the test of the
reference fails when a field has no sentence here, a sentence names a field
that no longer exists, or an example stops validating.

Keys are "<class that declares the field>.<field>", so a field inherited by
every credential kind is described once.
"""

from __future__ import annotations

INTRO = """\
# Policy reference

Generated from the configuration models (`rr_addon/config/`) by `rr schema
--markdown`; do not edit by hand. A test fails when this page and the models
disagree. Regenerate with:

```sh
.venv/bin/rr schema --markdown > docs/policy.md
.venv/bin/rr schema > docs/policy.schema.json
```

A policy is one or more YAML files with two lists, `targets` (the upstream APIs)
and `proxies` (the governed consumers: an app, a CI job, an agent). `rr apply -f
FILE…` validates every file, then makes the stored configuration equal to them
in one transaction; errors name the file, line, object and field. The plan it
prints shows every changed field as `old → new`; deleting objects the files no
longer declare needs `--prune` (or a yes on a terminal), and files that declare
nothing need `--allow-empty`. Configurations that are valid but do nothing
(a rule without a condition, a meter that only repeats the usage counters, a
proxy without targets or credentials, a target no proxy uses) are reported as
warnings and applied.

Editors that speak the YAML language server validate and complete policy files
against the JSON Schema [`policy.schema.json`](policy.schema.json) (`rr schema`
prints it): put this first line in the file, with the path relative to it:

```yaml
# yaml-language-server: $schema=../docs/policy.schema.json
```

Conventions used below: *regex* is RE2 syntax (linear time; no look-around, no
back-references) with **search** semantics — anchor with `^` and `$`; *name* is
1–64 letters, digits, `.`, `_` or `-`, starting with a letter or digit, unique
within its list; a field marked *required* has no default.
"""

# How the objects fit together, in reading order: (model name, heading, introduction, example).
OBJECTS: list[tuple[str, str, str, str]] = [
    (
        "Config",
        "Policy file",
        "The top level of every policy file. Several files are merged (`rr apply -f a.yaml -f b.yaml`); a name defined in two files is an error.",
        "targets:\n  - {name: stripe, hosts: [api.stripe.com], credentials: [{name: live, kind: bearer, secret: {env: STRIPE_KEY}}]}\n"
        "proxies:\n  - name: billing\n    targets: [{target: stripe}]\n    credentials: [{name: agent-1, auth: api_key, secret: {env: AGENT1_KEY}}]\n",
    ),
    (
        "Target",
        "Target",
        "An upstream API. A request's host (and port) selects one target of the caller's proxy; a host that is no "
        "target of the proxy is refused with 403 `unknown-target`. Hosts are exact names or `*.example.com` "
        "(subdomains at any depth, not the apex), optionally with `:port`; without a port a pattern matches the "
        "scheme's default port. The most specific pattern wins.",
        "name: stripe\nhosts: [api.stripe.com]\ncredentials:\n  - {name: live, kind: bearer, secret: {env: STRIPE_KEY}}\n"
        "rules:\n  - {name: no-refunds, effect: deny, methods: [POST], path: \"^/v1/refunds\"}\n",
    ),
    (
        "TargetCredentialBase",
        "Target credential (every kind)",
        "An upstream secret rr injects into requests to its target; callers never see it. It is stored encrypted "
        "and applied below every mitmproxy view, so flows, dumps, logs and the audit trail show only a placeholder "
        "such as `Bearer [rr:stripe/live]`. `kind` selects how it is sent (the sections below). Every kind has these fields.",
        "",
    ),
    ("ApiKeyCredential", "kind: api_key", "The secret in a header or a query parameter (exactly one of `header`, `query`).", "name: keyed\nkind: api_key\nheader: X-API-Key\nsecret: {env: VENDOR_KEY}\n"),
    ("BearerCredential", "kind: bearer", "`Authorization: Bearer <secret>`.", "name: live\nkind: bearer\nsecret: {env: STRIPE_KEY}\n"),
    ("BasicCredential", "kind: basic", "`Authorization: Basic base64(username:secret)`.", "name: ci\nkind: basic\nusername: deploy\nsecret: {file: secrets/deploy.txt}\n"),
    ("JwtCredential", "kind: jwt", "A static JWT (a string rr does not verify), sent as `<prefix><secret>` in `header`.", "name: partner\nkind: jwt\nsecret: {env: PARTNER_JWT}\n"),
    (
        "CustomCredential",
        "kind: custom",
        "Header and query templates; `{secret}` is replaced by the secret.",
        "name: legacy\nkind: custom\nheaders: {X-Auth: \"Token {secret}\"}\nquery: {sig: \"{secret}\"}\nsecret: {env: LEGACY_TOKEN}\n",
    ),
    ("NoneCredential", "kind: none", "Nothing is injected (a public API that rr governs without a secret). Takes no `secret`.", "name: public\nkind: none\n"),
    (
        "OAuth2ClientCredentials",
        "kind: oauth2_client_credentials",
        "An upstream OAuth 2.0 access token fetched with the client-credentials grant, cached and refreshed (one "
        "request per refresh under load), sent as `Authorization: Bearer <token>`. The token is used only while "
        "valid (less a safety margin of a tenth of its life, at most 5 s). A token endpoint that cannot give a "
        "token while none is valid (down, erroring, garbled answer) is 502 `upstream-auth-unavailable`; one that "
        "refuses the client (HTTP 400, 401, 403) is 502 `upstream-credential-error`; nothing reaches the upstream "
        "either way. rr authenticates as a client with `client_secret` (`client_auth: basic` or `post`) or with "
        "a private key (`client_auth: private_key_jwt`, `client_key`). Takes no `secret`. These fields and that "
        "behaviour are shared by the kinds `oauth2_refresh_token` and `oauth2_jwt_bearer`.",
        "name: m2m\nkind: oauth2_client_credentials\ntoken_url: https://login.example.com/oauth/token\nclient_id: rr-gateway\n"
        "client_secret: {env: M2M_SECRET}\nscope: [reports:read]\n",
    ),
    (
        "OAuth2RefreshToken",
        "kind: oauth2_refresh_token",
        "An upstream OAuth 2.0 access token obtained with a stored refresh token (a user's delegated access), sent "
        "as `Authorization: Bearer <token>`. When the token endpoint answers with a new refresh token (rotation), "
        "rr stores it encrypted in the configuration database at once; every data plane and every restart uses "
        "the newest. Data planes take turns: one refreshes while the others wait for it and then read the token "
        "it stored, so a rotated refresh token is never spent twice. Applying the same `refresh_token` again keeps "
        "the rotated one; applying a new one replaces it. The secrets (`refresh_token` and, with `client_auth` "
        "`basic`/`post`, `client_secret`, or with `private_key_jwt`, `client_key`) are given all together or not at "
        "all (then the stored ones are kept); `watch: true` is not supported on them. A public client sets "
        "`client_auth: none` (only `client_id` is sent).",
        "name: crm-user\nkind: oauth2_refresh_token\ntoken_url: https://login.example.com/oauth/token\nclient_id: rr-gateway\n"
        "client_secret: {env: CRM_CLIENT_SECRET}\nrefresh_token: {env: CRM_REFRESH_TOKEN}\nscope: [contacts.read]\n",
    ),
    (
        "OAuth2JwtBearer",
        "kind: oauth2_jwt_bearer",
        "An upstream OAuth 2.0 access token obtained with a JWT assertion signed by a private key (RFC 7523), sent as "
        "`Authorization: Bearer <token>`. Either a Google `service_account` key file (its `client_email` is the "
        "assertion's issuer and subject, its `private_key` signs, `scope` goes in the assertion; its `token_uri` "
        "must equal `token_url`), or an explicit `issuer`, `subject`, `private_key` and `key_id`. Each assertion "
        "lives 5 minutes, names `token_url` (or `assertion_audience`) as audience and has a fresh `jti`. By default "
        "rr does not authenticate as a client (`client_auth: none`); IdPs that want it take the same `client_auth` "
        "fields as the other kinds. Secrets are given all together or not at all.",
        "name: bigquery\nkind: oauth2_jwt_bearer\ntoken_url: https://oauth2.googleapis.com/token\n"
        "service_account: {file: secrets/bigquery-sa.json}\nscope: [https://www.googleapis.com/auth/bigquery.readonly]\n",
    ),
    (
        "Proxy",
        "Proxy",
        "A governed consumer. Its credentials say who may call; its targets say where to; its rules, meters, "
        "filters, redaction and validation apply to every request through it.",
        "name: billing\nmode: enforce\ntargets: [{target: stripe, credential: live}]\n"
        "credentials: [{name: agent-1, auth: api_key, secret: {env: AGENT1_KEY}}]\n"
        "meters: [{name: requests, limits: {minute: 60}}]\n",
    ),
    ("ProxyTarget", "Proxy target", "A target the proxy may reach, and the target credential it uses there.", "target: stripe\ncredential: live\n"),
    (
        "ProxyCredentialBase",
        "Proxy credential (every kind)",
        "A caller identity. The caller presents it in `Proxy-Authorization` (so `HTTPS_PROXY=http://anything:<key>@host:port` "
        "works with every client), `X-RR-Authorization`, the request's own `Authorization` or a target's `caller_headers`; "
        "every header that carried it is removed before anything else sees the request. A token that matches no "
        "credential, or an expired or inactive one, is 401 `unauthenticated`. `auth` selects the kind (the sections "
        "below). Static secrets are stored only as keyed HMAC-SHA256 digests.",
        "",
    ),
    ("ApiKeyCaller", "auth: api_key", "An opaque key.", "name: agent-1\nauth: api_key\nsecret: {env: AGENT1_KEY}\n"),
    ("BearerCaller", "auth: bearer", "An opaque token (compared like an api_key).", "name: svc\nauth: bearer\nsecret: {env: SVC_TOKEN}\n"),
    ("JwtCaller", "auth: jwt", "A static JWT string compared like a bearer token; not verified (see `jwt_verify`).", "name: legacy\nauth: jwt\nsecret: {env: LEGACY_JWT}\n"),
    (
        "BasicCaller",
        "auth: basic",
        "A `username:secret` pair (`Basic` in `Proxy-Authorization`, or the user and password of `HTTPS_PROXY`).",
        "name: ci\nauth: basic\nusername: ci\nsecret: {env: CI_PASSWORD}\n",
    ),
    (
        "JwtVerifyCaller",
        "auth: jwt_verify",
        "A JWT verified on every request: keys from `jwks_url`, an inline `jwks` or an HMAC `secret` (exactly one). "
        "The verified claims can be matched by rules (`claims`). Refusals say why (expired, bad signature, wrong "
        "audience, unknown kid).",
        "name: workloads\nauth: jwt_verify\njwks_url: https://idp.example.com/.well-known/jwks.json\nissuer: https://idp.example.com\n"
        "audience: rr\nrequired_claims: {sub: \"^ci-\"}\n",
    ),
    ("JwksCache", "JWKS cache", "How keys fetched from a `jwks_url` are cached (seconds).", "min_ttl: 60\nmax_ttl: 3600\n"),
    (
        "OAuth2Caller",
        "auth: oauth2",
        "An OAuth 2.0 access token: introspected at `introspection_url` (RFC 7662) and/or, with `jwks_url` or `jwks`, "
        "verified locally as an RFC 9068 JWT access token (then `issuer` and `audience` are required). Takes "
        "`client_secret`, not `secret`.",
        "name: partners\nauth: oauth2\nintrospection_url: https://idp.example.com/introspect\nclient_id: rr\n"
        "client_secret: {env: INTROSPECTION_SECRET}\nscopes: [payments:read]\n",
    ),
    (
        "Rule",
        "Rule",
        "Access rules sit on four scopes — the proxy, the target, the proxy credential and the target credential — "
        "and every scope must allow. Within a scope every matching rule counts: any matching `deny` denies, else any "
        "matching `allow` allows, else the scope's `default_effect`. A rule matches when **all** the conditions it "
        "sets match; a rule with no condition matches every request (a warning). Denied: 403 `access-denied` "
        "naming the scope and rule, nothing forwarded. Paths are matched in canonical form (unreserved escapes "
        "decoded, dot segments resolved, repeated slashes collapsed); an ambiguous path is refused with 400. A "
        "query parameter, header or form field sent more than once: an `allow` condition must hold for every "
        "occurrence, a `deny` condition for some. `rr explain` prints the decision tree.",
        "name: small-pages-only\neffect: allow\nmethods: [GET]\npath: \"^/v1/customers$\"\n"
        "query: [{name: \"^limit$\", value: \"^[0-9]{1,2}$\"}]\n",
    ),
    ("Match", "Conditions", "The conditions of a rule, also used by a meter's `when`.", "methods: [POST]\npath: \"^/v1/chat/completions$\"\nbody: [{json_path: $.model, value: \"^gpt-4o-mini$\"}]\n"),
    (
        "PathSpec",
        "Path condition",
        "Which request paths a rule, a meter's `when` or a validation entry applies to, matched on the canonical "
        "path (no query; dot segments resolved, repeated slashes collapsed). Exactly one of `prefix`, `glob`, "
        "`regex`, `pattern`; `path: REGEX` is short for `path: {pattern: REGEX}`. On `/v1/charges/ch_1`, "
        "`/v1/chargesbacks` and `/x/v1/charges`: `{prefix: /v1/charges}` matches only the first, `{glob: "
        "\"/v1/charges/*\"}` only the first, `\"/v1/charges\"` (a search) all three. `rr apply` warns about a "
        "`pattern` that looks like a glob (`\"/v1/charges*\"`) and an allow rule's `pattern` not anchored with `^`; "
        "`rr explain` names the form each rule used and whether it matched. All forms of a scope run as one RE2 set.",
        "glob: \"/v1/charges/*/refunds\"\n",
    ),
    ("PathMatch", "Path condition of a rule", "A path condition (any form above) plus `presence`.", "prefix: /admin\npresence: absent\n"),
    ("HeaderMatch", "Header condition", "Some header whose name matches `name` has a value matching `value`. Header names are matched case-insensitively.", "name: \"^x-debug$\"\npresence: present\n"),
    ("QueryMatch", "Query condition", "Like a header condition, on the decoded query parameters.", "name: \"^limit$\"\nvalue: \"^[0-9]{1,3}$\"\n"),
    (
        "BodyMatch",
        "Body condition",
        "On the request body: `json_path` (+ `value`) on the body parsed as JSON whatever its content type (a "
        "declared form is seen as `{name: [values…]}`), or `pattern` on the raw text. Exactly one of `json_path`, `pattern`.",
        "json_path: $.model\nvalue: \"^gpt-4o-mini$\"\n",
    ),
    (
        "McpMatch",
        "MCP condition",
        "On a JSON-RPC 2.0 request body (an MCP message over streamable HTTP, or a batch), read whatever its content "
        "type: `method` on the call's `method`, `tool` on `params.name`, `arguments` inside `params.arguments`; all that "
        "are set must match one call. A deny rule matches if any call of a batch matches, an allow rule only if every "
        "call does. A body that is not JSON-RPC never matches; a non-empty body rr cannot read as JSON, or a batch of "
        "more than 64 messages, matches every deny rule and no allow rule. `jsonrpc: \"2.0\"` is not required and member "
        "names are read case-insensitively, as lenient servers read them. `rr explain` says which call matched; audit "
        "records carry `mcp_method` and `mcp_tool`.",
        "method: \"^tools/call$\"\ntool: \"^(delete|drop)_\"\narguments:\n  - json_path: $.path\n    value: \"^/etc/\"\n",
    ),
    (
        "McpArgumentMatch",
        "MCP argument condition",
        "A JSONPath (+ `value`) inside a call's `params.arguments`. A deny rule needs some selected node to match "
        "`value`, an allow rule every selected node (and at least one).",
        "json_path: $.path\nvalue: \"^/tmp/\"\n",
    ),
    ("ClaimMatch", "Claim condition", "A top-level claim of the caller's verified token (`jwt_verify`, `oauth2`); never matches a caller without verified claims.", "claim: scope\nvalue: \"(^| )payments:write( |$)\"\n"),
    (
        "MeterSpec",
        "Meter",
        "A quota or a counter on a proxy. Windows are calendar-aligned (minute, hour, day, month) in UTC or "
        "`timezone`. Only requests that passed authentication and rules count. Over any limit: 429 "
        "`quota-exceeded` with `Retry-After`, nothing forwarded, nothing counted; responses carry `RateLimit-Policy` "
        "and `RateLimit`. Without limits a meter only tracks (`rr usage`); a `request_count` meter without limits "
        "and without `when` counts exactly what the per-credential usage counters always count, so rr warns that it "
        "does nothing. `response_value` meters admit while the total is under the limit and add the value read "
        "from the response (JSON body, header, or the last matching event of an event stream); with `reserve` they "
        "count a reservation at admission instead, so concurrent requests cannot overrun the limit (docs/budgets.md). "
        "`cost` meters count money: token counts priced by model, in micro-units of `currency`.",
        "name: tokens\ntype: response_value\nresponse_value: {json_path: $.usage.total_tokens}\nlimits: {day: 100000}\n"
        "per: credential\nwhen: {methods: [POST]}\n",
    ),
    (
        "Limits",
        "Limits",
        "The most a meter may count per window; any subset of the four windows. 0 refuses every request. Whole "
        "numbers, except for a `cost` meter: an amount of its currency, at most 6 decimals.",
        "minute: 60\nday: 10000\n",
    ),
    (
        "Reserve",
        "Reservation",
        "What a `response_value` or `cost` meter counts when it admits a request, replaced by the measured value "
        "when the response ends (docs/budgets.md). A request whose reservation does not fit every window is refused. "
        "Nothing came back (connection error, timeout), or a non-2xx answer without a value: released.",
        "json_path: $.max_tokens\ndefault: 4096\n",
    ),
    (
        "CostSpec",
        "Cost",
        "How a `cost` meter prices a response: the model (from the request body, else the response), its price, "
        "and the input and output token counts of the response (or of its events, the last one that has each). A "
        "request naming a model without a price and without `default` is refused with `unknown-model`.",
        "model: $.model\nprices:\n  gpt-4o-mini: {input: 0.00015, output: 0.0006}\ninput: $.usage.prompt_tokens\noutput: $.usage.completion_tokens\n",
    ),
    ("Price", "Price", "Per 1,000 tokens, in the meter's currency; exact decimals.", "input: 0.00015\noutput: 0.0006\n"),
    ("JsonPathValue", "Response value from JSON", "The number at a JSONPath of the response JSON (or of a `text/event-stream` event).", "json_path: $.usage.total_tokens\n"),
    ("HeaderValue", "Response value from a header", "The number in a response header.", "header: x-tokens-used\n"),
    (
        "FilterEntry",
        "Filter",
        "Rewrites 2xx JSON responses before the caller sees them: `retain` keeps only the listed paths, then "
        "`destroy` removes paths. Filters stack in the order target credential → target → proxy credential → "
        "proxy, each on the output of the last. A 2xx response that must be filtered but is not JSON is 422 "
        "`unfilterable-response`; one larger than the buffer limit is 502 `response-too-large`.",
        "retain: [\"$.data[*].id\", \"$.object\"]\ndestroy: [\"$.data[*].card\"]\n",
    ),
    (
        "RedactEntry",
        "Redaction",
        "Masks (`[REDACTED:EMAIL]`) or hashes (a stable keyed pseudonym) personal data and secrets in responses "
        "and/or request bodies. Built-in detectors: `email`, `phone`, `credit_card` (Luhn-valid), `iban` (mod 97), "
        "`us_ssn`, `ip_address`, `secret` (cloud keys, tokens, JWTs, PEM keys); or `{custom: REGEX}`.",
        "detectors: [email, credit_card, {custom: \"EMP-[0-9]{6}\", name: employee_id}]\naction: mask\ndirection: both\n",
    ),
    ("CustomDetector", "Custom detector", "A redaction pattern of your own.", "custom: \"EMP-[0-9]{6}\"\nname: employee_id\n"),
    (
        "ValidateEntry",
        "Validation",
        "Checks request bodies before they leave: size (413 `payload-too-large`), content type (415 "
        "`unsupported-media-type`), JSON Schema 2020-12 for the requests `methods` and `path` select (400 "
        "`invalid-request` naming the failing pointer). Each entry needs at least one of `max_body_bytes`, "
        "`content_types`, `json_schema`.",
        "methods: [POST]\npath: \"^/v1/charges$\"\njson_schema: {type: object, required: [amount]}\n",
    ),
    (
        "EnvSecret",
        "Secret",
        "Every `secret` (and `client_secret`) is a literal string, `{env: NAME}` or `{file: PATH}` (relative to the "
        "YAML file; a trailing newline is dropped), resolved by `rr apply`. A credential without a secret keeps the "
        "stored one, so `rr export` → edit → `rr apply` round-trips; a new credential needs one.",
        "env: STRIPE_KEY\n",
    ),
    ("FileSecret", "Secret from a file", "See [Secret](#secret).", "file: /var/run/secrets/stripe/token\nwatch: true\n"),
]

FIELDS: dict[str, str] = {
    "Config.targets": "The upstream APIs.",
    "Config.proxies": "The governed consumers.",
    "Target.name": "The target's name, used by proxies and in placeholders, audit records and `rr explain`.",
    "Target.hosts": "Host patterns this target answers for: `api.example.com`, `*.example.com`, optionally `:port`.",
    "Target.schemes": "Schemes callers may use. `http` sends the secret in clear text: list it only on purpose.",
    "Target.default_effect": "The target scope's effect when none of its rules matches.",
    "Target.allow_private_addresses": "Let the host resolve to loopback, private, CGNAT or link-local addresses; otherwise such a connection is refused (403), against SSRF.",
    "Target.allow_path_parameters": "Accept `;` parameters in path segments; otherwise refused with 400 (frameworks that strip `;x` would route elsewhere than the rules saw).",
    "Target.allow_encoded_slashes": "Accept `%2F` within a path segment (npm's `@scope%2fname`, GitLab's `group%2Frepo`); rules and the upstream see it upper-case as a literal, never a separator, and `.`/`..` between encoded slashes stay refused. Otherwise refused with 400.",
    "Target.caller_headers": "Extra request headers that may carry a caller credential (e.g. an SDK's `x-api-key`); removed before forwarding.",
    "Target.credentials": "The upstream secrets of this target.",
    "Target.rules": "The target scope's rules.",
    "Target.filters": "Response filters of this target.",
    "Target.redact": "Redaction for this target's traffic.",
    "Target.validate_": "Request validation for this target.",
    "Target.description": "Free text for people; rr ignores it.",
    "TargetCredentialBase.name": "The credential's name, unique within the target; shown in the placeholder `[rr:target/name]`.",
    "TargetCredentialBase.secret": "The upstream secret (see [Secret](#secret)); omitted on an existing credential: keep the stored one.",
    "TargetCredentialBase.description": "Free text for people; rr ignores it.",
    "TargetCredentialBase.rules": "The target-credential scope's rules.",
    "TargetCredentialBase.default_effect": "The target-credential scope's effect when none of its rules matches.",
    "TargetCredentialBase.filters": "Response filters, applied first (before the target's).",
    "TargetCredentialBase.redact": "Redaction for requests that use this credential.",
    "ApiKeyCredential.header": "The header that carries the secret.",
    "ApiKeyCredential.query": "The query parameter that carries the secret.",
    "EnvSecret.env": "An environment variable of the `rr apply` process.",
    "FileSecret.file": "A file path, relative to the YAML file.",
    "FileSecret.watch": (
        "Target credentials only: `true` makes every data plane read the file itself (at start, then every second) and use a "
        "changed value for new requests without a restart or `rr apply` — for secrets mounted by Kubernetes or written by a "
        "vault agent. `rr apply` still reads it once (a data plane that cannot read it starts with that value) and stores its "
        "absolute path, not resolved through symlinks. An unreadable or empty file keeps the last good value, logs an error "
        "and counts in `rr_secret_source_errors_total`; the replaced value stays masked in responses for 5 minutes. "
        "`rr secret status` shows what each data plane reads."
    ),
    "Match.methods": "HTTP methods (case-insensitive); omitted: any method.",
    "Match.path": "Which paths: `{prefix}`, `{glob}`, `{regex}` (full match) or a regex searched in the path; see [Path condition](#path-condition).",
    "Match.headers": "Header conditions; all must match.",
    "Match.query": "Query-parameter conditions; all must match.",
    "Match.body": "Body conditions; all must match.",
    "Match.claims": "Verified-claim conditions; all must match.",
    "Match.mcp": "A condition on the JSON-RPC calls of the body (MCP); see [MCP condition](#mcp-condition).",
    "McpMatch.method": "A regex on the call's `method` (`tools/call`, `resources/read`, …).",
    "McpMatch.tool": "A regex on `params.name`: the MCP tool a `tools/call` calls.",
    "McpMatch.arguments": "Conditions on `params.arguments`; all must match.",
    "McpArgumentMatch.json_path": "A JSONPath into `params.arguments`, in rr's one dialect.",
    "McpArgumentMatch.value": "A regex on the selected values; omitted: presence only.",
    "McpArgumentMatch.presence": "`absent`: the condition holds when no selected value matches.",
    "Match.ignore_case": "Make every regex of this rule case-insensitive (header names always are).",
    "Rule.name": "The rule's name, unique within its scope; named in denials, audit records and `rr explain`.",
    "Rule.effect": "What a match does.",
    "Rule.priority": "Order of reporting among matching rules (higher first); it never changes the outcome.",
    "Rule.description": "Free text for people; rr ignores it.",
    "PathSpec.prefix": "A path and everything below it, whole segments only: `/v1/charges` matches `/v1/charges` and `/v1/charges/ch_1`, not `/v1/chargesbacks`; end it with `/` for only what is below.",
    "PathSpec.glob": "The whole path as a glob: `*` matches within one segment, `**` across segments, every other character is literal.",
    "PathSpec.regex": "An RE2 regex that must match the whole path (anchored at both ends for you).",
    "PathSpec.pattern": "The original form: an RE2 regex searched anywhere in the path; anchor it (`^/v1/`) or prefer `prefix`, `glob` or `regex`.",
    "PathMatch.presence": "`absent`: the condition holds when the path does not match.",
    "HeaderMatch.name": "A regex on the header (or parameter) name.",
    "HeaderMatch.value": "A regex on its value; omitted: presence only.",
    "HeaderMatch.presence": "`absent`: no header (parameter) with a matching name and value may be sent.",
    "BodyMatch.json_path": "A JSONPath into the body, in rr's one dialect (as in filters and meters): exact number comparisons, `=~` is an RE2 search.",
    "BodyMatch.pattern": "A regex on the raw body text.",
    "BodyMatch.value": "A regex on the value found at `json_path`; omitted: presence only.",
    "BodyMatch.presence": "`absent`: the condition holds when nothing matches.",
    "ClaimMatch.claim": "The claim's name.",
    "ClaimMatch.value": "A regex on the claim's value; omitted: presence only.",
    "ClaimMatch.presence": "`absent`: the condition holds when the claim is missing (or no value matches).",
    "FilterEntry.retain": "JSONPaths to keep; everything else is removed.",
    "FilterEntry.destroy": "JSONPaths to remove (`$` itself cannot be destroyed).",
    "FilterEntry.description": "Free text for people; rr ignores it.",
    "RedactEntry.detectors": "What to find: built-in names or `{custom: REGEX, name: LABEL}`.",
    "RedactEntry.action": "`mask` replaces with `[REDACTED:NAME]`; `hash` with a stable keyed pseudonym.",
    "RedactEntry.direction": "Responses, request bodies (scrubbed before they leave), or both.",
    "RedactEntry.description": "Free text for people; rr ignores it.",
    "CustomDetector.custom": "The regex to redact.",
    "CustomDetector.name": "The label in `[REDACTED:NAME]` and in counts: 1–32 lower-case letters, digits or `_`; default `custom`.",
    "BasicCredential.username": "The user name (no `:`).",
    "JwtCredential.header": "The header that carries the token.",
    "JwtCredential.prefix": "Text before the token in the header.",
    "CustomCredential.headers": "Header name → template.",
    "CustomCredential.query": "Query parameter → template.",
    "_TokenEndpoint.token_url": "The token endpoint (https; http only to loopback). rr sends its client secret, key assertions and refresh tokens nowhere else.",
    "_TokenEndpoint.client_id": "The OAuth client id (every kind but `oauth2_jwt_bearer` needs one).",
    "_TokenEndpoint.client_auth": "How rr authenticates to the token endpoint: `basic` (HTTP Basic with `client_secret`), `post` (`client_secret` in the form), `private_key_jwt` (a one-minute JWT signed with `client_key`, RFC 7523 §2.2), `none` (a public client: `client_id` only; not for client credentials). Default `basic`; `none` for `oauth2_jwt_bearer`.",
    "_TokenEndpoint.client_secret": "The OAuth client secret for `basic`/`post` (see [Secret](#secret)); omitted on an existing credential: keep the stored one.",
    "_TokenEndpoint.client_key": "The client's PEM private key (RSA ≥ 2048 bits, EC P-256/384/521 or Ed25519) for `private_key_jwt`; stored encrypted like every secret.",
    "_TokenEndpoint.client_key_id": "The `kid` header of the client assertion, for IdPs that hold several keys of a client.",
    "_TokenEndpoint.scope": "Scopes to ask for, space-separated (a list is joined).",
    "_TokenEndpoint.audience": "An `audience` form parameter for token endpoints that need one.",
    "_TokenEndpoint.resource": "A `resource` form parameter (RFC 8707): the API the token is for.",
    "_TokenEndpoint.refresh_skew": "Refresh the token this many seconds before it expires.",
    "_TokenEndpoint.timeout": "Seconds to wait for the token endpoint.",
    "OAuth2RefreshToken.refresh_token": "The refresh token (see [Secret](#secret)); stored encrypted, replaced there by the IdP's rotations.",
    "OAuth2JwtBearer.service_account": "A Google service-account key file (JSON with `type: service_account`, `client_email`, `private_key`, `private_key_id`, `token_uri`), usually `{file: …}`.",
    "OAuth2JwtBearer.issuer": "The assertion's `iss` (explicit keys; not with `service_account`).",
    "OAuth2JwtBearer.subject": "The assertion's `sub`; default: the issuer (or the service account's `client_email`; set it to act as a user, Google's domain-wide delegation).",
    "OAuth2JwtBearer.private_key": "The PEM private key that signs the assertion (with `issuer`).",
    "OAuth2JwtBearer.key_id": "The assertion's `kid` header (with `issuer`; a service account sends its `private_key_id`).",
    "OAuth2JwtBearer.algorithm": "The signing algorithm; default from the key (RS256 for RSA, ES256/384/512 for EC, EdDSA for Ed25519).",
    "OAuth2JwtBearer.assertion_audience": "The assertion's `aud`; default: `token_url`.",
    "ValidateEntry.methods": "The methods this entry checks; omitted: all.",
    "ValidateEntry.path": "Which paths this entry checks, in any [path form](#path-condition); omitted: all.",
    "ValidateEntry.max_body_bytes": "The largest request body allowed (413 beyond).",
    "ValidateEntry.content_types": "Allowed request media types (`type/subtype`, `type/*`, `*/*`); 415 otherwise.",
    "ValidateEntry.json_schema": "A JSON Schema (2020-12, local `$ref` only) the JSON body must satisfy; 400 with the failing pointer otherwise.",
    "ValidateEntry.description": "Free text for people; rr ignores it.",
    "Proxy.name": "The proxy's name, named in audit records, `rr usage` and `rr env`.",
    "Proxy.active": "`false` refuses every caller of this proxy (401).",
    "Proxy.mode": "`report` trials the access rules: they decide and record `would-deny`, but requests are forwarded. Authentication and target mapping always enforce.",
    "Proxy.default_effect": "The proxy scope's effect when none of its rules matches.",
    "Proxy.targets": "The targets this proxy may reach.",
    "Proxy.credentials": "Who may call through this proxy.",
    "Proxy.rules": "The proxy scope's rules.",
    "Proxy.meters": "Quotas and counters.",
    "Proxy.filters": "Response filters, applied last.",
    "Proxy.redact": "Redaction for this proxy's traffic.",
    "Proxy.validate_": "Request validation for this proxy's traffic.",
    "Proxy.description": "Free text for people; rr ignores it.",
    "ProxyTarget.target": "A target's name.",
    "ProxyTarget.credential": "The target credential to inject; omitted: the target's only credential (an error when it has several).",
    "ProxyCredentialBase.name": "The credential's name, unique within the proxy.",
    "ProxyCredentialBase.secret": "The caller's secret (see [Secret](#secret)); for `jwt_verify` the HMAC key. Omitted on an existing credential: keep the stored one.",
    "ProxyCredentialBase.active": "`false` refuses this caller (401).",
    "ProxyCredentialBase.expires_at": "After this moment the caller is refused (401). A time without zone is UTC.",
    "ProxyCredentialBase.target_credentials": "Target name → target credential this caller uses there instead of the proxy's choice.",
    "ProxyCredentialBase.description": "Free text for people; rr ignores it.",
    "ProxyCredentialBase.rules": "The proxy-credential scope's rules.",
    "ProxyCredentialBase.default_effect": "The proxy-credential scope's effect when none of its rules matches.",
    "ProxyCredentialBase.filters": "Response filters for this caller (after the target's, before the proxy's).",
    "ProxyCredentialBase.redact": "Redaction for this caller's traffic.",
    "BasicCaller.username": "The user name (no `:`).",
    "_Verifying.jwks_url": "Where to fetch the signing keys (https; http only to loopback); cached, see `jwks_cache`.",
    "_Verifying.jwks": "The signing keys inline, as a JWKS document.",
    "_Verifying.algorithms": "Accepted signature algorithms (never `none`); default RS256 and ES256, or HS256 with a `secret`. HMAC and public-key algorithms do not mix.",
    "_Verifying.leeway": "Seconds of clock skew tolerated on `exp`, `nbf`, `iat`.",
    "_Verifying.required_claims": "Claim → regex every token must satisfy.",
    "_Verifying.jwks_cache": "Caching of `jwks_url`.",
    "JwtVerifyCaller.issuer": "The required `iss`.",
    "JwtVerifyCaller.audience": "The required `aud`.",
    "JwtVerifyCaller.require_exp": "Refuse tokens without `exp` (they would be valid forever).",
    "JwksCache.min_ttl": "The least time keys are cached, whatever `Cache-Control` says.",
    "JwksCache.max_ttl": "The most time keys are cached.",
    "JwksCache.default_ttl": "How long keys are cached when the endpoint sends no `max-age`.",
    "JwksCache.refetch_interval": "At most one refetch per interval (unknown `kid`, failures).",
    "JwksCache.timeout": "Seconds to wait for the JWKS endpoint.",
    "OAuth2Caller.introspection_url": "The RFC 7662 introspection endpoint (https; http only to loopback).",
    "OAuth2Caller.client_id": "rr's client id at the introspection endpoint.",
    "OAuth2Caller.client_secret": "rr's client secret there (see [Secret](#secret)); omitted on an existing credential: keep the stored one.",
    "OAuth2Caller.client_auth": "`basic`: HTTP Basic to the endpoint; `post`: in the form body.",
    "OAuth2Caller.issuer": "The required issuer; required with `jwks_url`/`jwks`.",
    "OAuth2Caller.audience": "The required audience; required with `jwks_url`/`jwks`.",
    "OAuth2Caller.scopes": "Scopes the token must all have been granted (`scope` claim).",
    "OAuth2Caller.cache_max_ttl": "Active introspection answers are cached until `exp`, at most this many seconds.",
    "OAuth2Caller.negative_ttl": "Seconds an inactive answer is cached.",
    "OAuth2Caller.timeout": "Seconds to wait for the introspection endpoint.",
    "MeterSpec.name": "The meter's name, unique within the proxy; keys its counters (`rr usage`).",
    "MeterSpec.type": "`request_count` counts requests; `response_value` adds a number read from each response; `cost` adds money. `type: {response_value: {…}}` is accepted too.",
    "MeterSpec.response_value": "Where a `response_value` meter reads its number.",
    "MeterSpec.limits": "The quota per window; omitted or empty: track only.",
    "MeterSpec.per": "One count for the whole proxy, or one per proxy credential.",
    "MeterSpec.when": "Which requests count, in the rule condition syntax; omitted: every request.",
    "MeterSpec.timezone": "IANA zone the windows follow (day and month boundaries).",
    "MeterSpec.on_backend_error": "When the counters are unreachable (Redis down): `deny` answers 429, `allow` lets requests through uncounted.",
    "MeterSpec.description": "Free text for people; rr ignores it.",
    "MeterSpec.cost": "Where a `cost` meter reads the model and the token counts, and its price table.",
    "MeterSpec.currency": "The currency of a `cost` meter's prices and limits (a code; `rr usage` shows it). Default USD.",
    "MeterSpec.reserve": "Count a reservation at admission, settled when the response ends.",
    "Reserve.json_path": "A JSONPath (or a list: the largest number they find) into the request body: the most the response may use, e.g. `$.max_tokens`.",
    "Reserve.default": "The reservation when the body has no number there; with `cost`, output tokens.",
    "Reserve.times": "A JSONPath (or a list: the largest number) to how many answers the request asks for, e.g. OpenAI's `$.n`: the reservation is multiplied by it (at least 1).",
    "Reserve.unmeasured": "A 2xx response rr could not measure (no usage in it, or the stream broke before it): `charge` keeps the reservation, `release` gives it back.",
    "Reserve.add_request_bytes": "Add the request body's size in bytes, an estimate of the prompt's tokens (a `cost` meter's input). Default: true for `cost`, false otherwise.",
    "CostSpec.model": "A JSONPath (or a list) to the model name, read from the request body, else from the response.",
    "CostSpec.prices": "Model name (exact) to price.",
    "CostSpec.default": "The price of a model not in `prices`; omitted: such a request is refused (`unknown-model`).",
    "CostSpec.input": "A JSONPath (or a list, the first that finds one) to the input token count of the response.",
    "CostSpec.output": "A JSONPath (or a list) to the output token count of the response.",
    "Price.input": "Per 1,000 input (prompt) tokens.",
    "Price.output": "Per 1,000 output (completion) tokens.",
    "JsonPathValue.json_path": "A JSONPath to a number.",
    "HeaderValue.header": "A response header holding a number.",
    "Limits.minute": "Per calendar minute.",
    "Limits.hour": "Per calendar hour.",
    "Limits.day": "Per calendar day.",
    "Limits.month": "Per calendar month.",
}

# The answers rr gives itself (types.STATUS), for the reference's last section.
CODES: dict[str, str] = {
    "unauthenticated": "No caller credential, or one that matches nothing, is expired, inactive or fails verification.",
    "unknown-target": "The host is no target of the caller's proxy, the scheme or port is not allowed.",
    "access-denied": "A rule denied (the message names the scope and rule), a private address, a request changed after rr decided it.",
    "unknown-model": "A `cost` meter has no price for the model the request body names (and no `default`).",
    "quota-exceeded": "A meter's limit is reached (`Retry-After`), or counters are unavailable with `on_backend_error: deny`.",
    "invalid-request": "The request is ambiguous (path, Host, method override, repeated JSON key) or fails a JSON Schema.",
    "payload-too-large": "The body exceeds `max_body_bytes` or what rr may inspect.",
    "unsupported-media-type": "The content type is not in `content_types`.",
    "unfilterable-response": "Filters apply but the 2xx response is not JSON.",
    "upstream-unavailable": "The upstream refused or reset the connection, or its name does not resolve; or its response, from a target with an injected secret, cannot be decoded to scrub an echoed secret (an unknown content-encoding, a corrupt body).",
    "upstream-credential-error": "The OAuth token endpoint of a target credential refused it (HTTP 400, 401 or 403: a wrong client secret or key, a revoked refresh token).",
    "upstream-auth-unavailable": "A target credential's OAuth token expired (or was never fetched) and its token endpoint cannot give a new one now: unreachable, timing out, erroring or answering garbage. rr never sends an expired token; nothing reaches the upstream.",
    "response-too-large": "A response rr must read whole is larger than its buffer limit.",
    "upstream-timeout": "The upstream did not finish answering in time.",
    "internal-error": "A fault inside rr; nothing was forwarded (fail closed).",
}
