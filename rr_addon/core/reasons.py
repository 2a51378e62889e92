"""The fixed reason sentences of every decision.

Tests assert these exact strings: they are part of the contract with the
people reading audit records, so change them deliberately.
"""

ALLOWED = "all scopes allow"

# 401 unauthenticated
NO_CREDENTIAL = "no caller credential presented"
PROXY_AUTH_CHALLENGE = "no proxy credential on the CONNECT (this proxy challenges for one)"
MALFORMED_CREDENTIAL = "malformed caller credential"
AMBIGUOUS_CREDENTIAL = "conflicting caller credentials"
UNKNOWN_CREDENTIAL = "caller credential matches no proxy credential"
EXPIRED_CREDENTIAL = "caller credential expired"
INACTIVE_CREDENTIAL = "caller credential inactive"
INACTIVE_PROXY = "proxy inactive"
# minted tokens (rr_addon.core.tokens)
TOKEN_BAD_SIGNATURE = "minted token signature does not verify"
TOKEN_EXPIRED = "minted token expired"
TOKEN_REVOKED = "minted token revoked"
TOKEN_PARENT_GONE = "minted token's parent credential no longer exists"
TOKEN_PARENT_CHANGED = "minted token's parent credential was re-created, or its key or verification changed, since minting"
TOKEN_PARENT_VERIFIES = "minted token's claims do not fit its parent (a child of a verifying credential carries the verified caller's claims)"

# 403 access-denied by a minted token's narrowing (after the parent's rules allowed)
TOKEN_TARGET = "target not among the minted token's targets"
TOKEN_REQUESTS_USED = "minted token's --max-requests are used up"
TOKEN_NOT_ALLOWED = "method and path not in the minted token's allow list"

# 403 unknown-target
UNKNOWN_TARGET = "host is not a target of this proxy"
SCHEME_NOT_ALLOWED = "scheme not allowed for this target"
CONNECT_PORT_NOT_ALLOWED = "no target allows this port"

# 403 access-denied (connection-time)
PRIVATE_ADDRESS = "target host resolves to a private address"  # private: not globally routable

# 403 access-denied at the upstream connection (docs/security.md)
CHANGED_AFTER_DECISION = "request changed after rr decided it"
UNDECIDED = "request reached the upstream connection without a decision"

# 502 at the upstream connection
LOOKUP_FAILED = "target host name could not be resolved"

# 5xx
NO_CONFIGURATION = "no configuration loaded"
INTERNAL_ERROR = "internal error in rr"
UPSTREAM_UNAVAILABLE = "upstream connection failed"
UPSTREAM_TIMEOUT = "upstream timed out"
# why a response held back whole was too large (filters and redaction: RESPONSE_TOO_LARGE)
BODY_TOO_LARGE_METERED = "response body larger than the buffer limit, and a response_value meter reads it"
BODY_TOO_LARGE_ENCODING = "response body larger than the buffer limit, and its content-encoding cannot be scrubbed of the injected secret while it streams"
TUNNEL_NOT_HTTP = "tunnel carries no HTTP"
# 502 upstream-unavailable: a response that could carry the injected secret back, and rr cannot scan
RESPONSE_ENCODING_UNSCRUBBABLE = "response content-encoding cannot be decoded to scrub the injected secret"
RESPONSE_BODY_UNSCRUBBABLE = "response body cannot be decoded to scrub the injected secret"

# 400 / 413 before the rules
HEADER_CONTROL_CHARACTER = "request header value contains CR, LF or NUL"
HOST_HEADER_OTHER_HOST = "Host header names another host than the request's target"
HOST_HEADER_REPEATED = "more than one Host header"
AUTHORITY_OTHER_HOST = "request authority (absolute-form or :authority) names another host than the request's target"
SNI_OTHER_HOST = "TLS server name (SNI) names another host than the request's target"
METHOD_OVERRIDE = "request carries a method override (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override or _method)"
PATH_OVERRIDE = "request carries a path override (X-Original-URL or X-Rewrite-URL)"
PATH_PARAMETERS = "';' parameters in a path segment are not allowed for this target"
ENCODED_SLASH_HINT = "a target that needs %2F within a segment (npm scopes, GitLab project ids) sets allow_encoded_slashes"
BODY_NOT_JSON = "request body claims JSON but does not parse"
BODY_FORM_AND_JSON = "request body declared as a form parses as JSON"
BODY_JSON_REPEATED_KEY = "request body JSON repeats a key in an object"
BODY_JSON_KEYS_DIFFER_IN_CASE = "request body JSON repeats a key in an object, differing only in case"
BODY_ENCODING_INVALID = "request body content-encoding cannot be decoded"
BODY_OVER_INSPECTION_LIMIT = "request body larger than the inspection limit for body rules"
BODY_OVER_REDACTION_LIMIT = "request body larger than the inspection limit, and request redaction applies: it is never sent unredacted"
FORM_OVER_INSPECTION_LIMIT = "request form body larger than the inspection limit (rr reads every form body for a _method override)"

# human approval (docs/approvals.md)
HELD_FOR_APPROVAL = "held for approval by rule"
WOULD_HOLD = "report mode: an approve rule matched; forwarded without holding"
APPROVED = "approved by a person"
DENIED_BY_APPROVER = "denied by a person"
APPROVAL_TIMEOUT = "nobody approved the request in time"
APPROVAL_CAPACITY = "too many requests of this proxy are already held for approval"
APPROVAL_NOT_RECORDED = "the pending approval could not be recorded in the database"
APPROVAL_WITHDRAWN = "the client closed the connection while the request was held"
APPROVAL_INTERRUPTED = "rr stopped while the request was held for approval"
HELD_OVER_INSPECTION_LIMIT = "request body over the inspection limit (a request held for approval is read whole)"

# Token verification (rr_addon.identity): a refused token is 401 with one of these.
EXPIRED = "token expired"
NOT_YET_VALID = "token not yet valid"
BAD_SIGNATURE = "token signature invalid"
WRONG_ISSUER = "token issuer not accepted"
WRONG_AUDIENCE = "token audience not accepted"
UNKNOWN_KID = "token signing key unknown"
ALGORITHM_NOT_ALLOWED = "token algorithm not allowed"
MALFORMED_TOKEN = "malformed token"
CLAIM_MISSING = "required claim missing"
CLAIM_INVALID = "required claim invalid"
KEYS_UNAVAILABLE = "signing keys unavailable"
WRONG_TOKEN_TYPE = "token type not accepted"
INACTIVE = "token inactive"
INTROSPECTION_UNAVAILABLE = "introspection endpoint unavailable"
INTROSPECTION_BUSY = "too many token introspections in flight"
INSUFFICIENT_SCOPE = "token scope insufficient"
NO_MATCHING_CREDENTIAL = "token matches no credential"
AMBIGUOUS_MATCH = "token matches more than one credential"

# Upstream token source (the glue answers these with 502 upstream-credential-error).
TOKEN_ENDPOINT_UNAVAILABLE = "token endpoint unavailable"
TOKEN_ENDPOINT_REFUSED = "token endpoint refused the client"
TOKEN_RESPONSE_INVALID = "token endpoint response invalid"

# policy/paths.py
PATH_NOT_ABSOLUTE = "path does not start with '/'"
PATH_INVALID_ESCAPE = "invalid percent-escape in path"
PATH_ENCODED_SEPARATOR = "encoded '/' or '\\' in path"
PATH_ENCODED_SLASH_DOT_SEGMENT = "dot segment between encoded slashes in path"
PATH_BACKSLASH = "backslash in path"
PATH_ENCODED_DOT_SEGMENT = "percent-encoded dot segment in path"
PATH_DOT_SEGMENT_PARAMETERS = "dot segment with parameters in path"
PATH_DOUBLE_ENCODING = "double percent-encoding in path"
PATH_CONTROL_CHARACTER = "NUL or control character in path"
PATH_FRAGMENT = "'#' in path"
PATH_INVALID_UTF8 = "path is not valid UTF-8"
PATH_ABOVE_ROOT = "path climbs above the root"

# policy/validation.py
VALIDATION_BODY_TOO_LARGE = "request body exceeds the size limit"  # 413 payload-too-large
VALIDATION_CONTENT_TYPE_NOT_ALLOWED = "request content type not allowed"  # 415 unsupported-media-type
VALIDATION_ENCODING_NOT_SUPPORTED = "request content encoding not supported"  # 415
VALIDATION_JSON_REQUIRED = "request body must be JSON"  # 415: a schema applies, the body is something else
VALIDATION_BODY_NOT_JSON = "request body is not valid JSON"  # 400 invalid-request
VALIDATION_SCHEMA_MISMATCH = "request body does not match the JSON schema"  # 400

# core/quota.py
QUOTA_EXCEEDED = "meter limit reached"
METER_BACKEND_DENY = "counters unavailable; the meter denies on backend error"
METER_BACKEND_ALLOW = "counters unavailable; the meter allows on backend error"
METER_UNCOUNTED = "counters unavailable; allowed without counting"

# core/responses.py
RESPONSE_NOT_JSON = "response body is not JSON, and filters apply"
RESPONSE_NOT_DECODABLE = "response body cannot be decoded, and filters or redaction apply"
RESPONSE_TOO_LARGE = "response body larger than the buffer limit, and filters or redaction apply"

# core/rules.py
DENIED_BY_RULE = "denied by rule"
ALLOWED_BY_RULE = "allowed by rule"
DEFAULT_ALLOWS = "no rule matched; scope default allows"
DEFAULT_DENIES = "no rule matched; scope default denies"
