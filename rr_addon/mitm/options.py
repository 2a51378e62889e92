"""rr's mitmproxy options: their declarations, and the checks `configure` applies to any change."""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

logger = logging.getLogger("rr")

LAZY_ONLY = (
    "connection_strategy=eager is not supported by rr: eager connects to the upstream (and completes "
    "its TLS handshake) as soon as a client sends CONNECT, before rr has decided any request; rr keeps "
    "connections lazy so that nothing reaches an upstream undecided. Remove the option."
)

# Options that decide where secrets may go or what rr sees: fixed once rr runs.
FROZEN_OPTIONS = frozenset(
    {
        "ssl_insecure",
        "ssl_verify_upstream_trusted_ca",
        "ssl_verify_upstream_trusted_confdir",
        "proxy_debug",
        "mode",
        "upstream_auth",
        "ignore_hosts",
        "allow_hosts",
        "tcp_hosts",
        "udp_hosts",
        "confdir",
        "validate_inbound_headers",
        "body_size_limit",
        "stream_large_bodies",
        "store_streamed_bodies",
    }
)


def declare(loader: Loader) -> None:
    loader.add_option(
        "rr_database_url", str, "", "rr database URL (default: $RR_DATABASE_URL, else sqlite:///$RR_HOME/rr.db)."
    )
    loader.add_option(
        "rr_dataplane_bundle", str, "",
        "Hybrid data plane: the bundle `rr control-plane issue-dataplane NAME` wrote. rr then needs no database: "
        "it pulls the configuration from the control plane (docs/hybrid.md).",
    )
    loader.add_option("rr_control_plane", str, "", "Hybrid data plane: the control plane's https://HOST:PORT (default: the bundle's).")
    loader.add_option(
        "rr_redis_url", str, "", "Redis URL for meter counters shared by every rr process (default: $RR_REDIS_URL; none: embedded counters)."
    )
    loader.add_option(
        "rr_reload_interval_ms", int, 1000, "Milliseconds between checks for a new rr configuration version (PostgreSQL also notifies at once)."
    )
    loader.add_option(
        "rr_idp_ca_file", str, "", "CA bundle (PEM) for identity providers (JWKS, introspection, token endpoints); default: the system's."
    )
    loader.add_option("rr_audit_file", str, "", "Append one JSON audit record per request to this file (JSON lines).")
    loader.add_option("rr_metrics_port", int, 0, "Serve Prometheus metrics on this port (0: off).")
    loader.add_option("rr_metrics_host", str, "127.0.0.1", "Address the Prometheus metrics are served on.")
    loader.add_option(
        "rr_max_client_connections",
        int,
        256,
        "Most simultaneous connections one client address may hold; more are closed at once (0: no limit).",
    )
    loader.add_option(
        "rr_connect_timeout",
        int,
        10,
        "Seconds to open an upstream connection (TCP and TLS); then 504 upstream-timeout (0: the system's limit).",
    )
    loader.add_option(
        "rr_first_byte_timeout",
        int,
        120,
        "Seconds an upstream may take, once the request is sent, to start its response; then 504 upstream-timeout (0: no limit).",
    )
    loader.add_option(
        "rr_idle_timeout",
        int,
        120,
        "Seconds without a byte in either direction while a request or response body streams; then rr cuts the "
        "exchange off (504 upstream-timeout if nothing reached the caller yet). A response that keeps moving is never cut (0: no limit).",
    )
    loader.add_option(
        "rr_upstream_timeout",
        int,
        -1,
        "Deprecated: was a deadline on the whole response. A value sets rr_first_byte_timeout and rr_idle_timeout (-1: unset).",
    )
    loader.add_option(
        "rr_buffer_limit",
        int,
        16 * 1024 * 1024,
        "Largest response body (bytes, after decoding) rr buffers to filter, redact or meter; larger is 502 response-too-large. "
        "Also the largest event of a text/event-stream a meter reads (larger: the response is unmeasured).",
    )
    loader.add_option(
        "rr_proxy_auth_challenge",
        bool,
        False,
        "Answer a CONNECT that carries no Proxy-Authorization (and a plain-http proxied request without any credential) "
        'with 407 and Proxy-Authenticate: Basic realm="rr", '
        "for clients that send proxy credentials only when challenged (Java, curl --proxy-anyauth, git's default "
        "proxyAuthMethod). Callers that cannot set proxy credentials (an rr key in Authorization or X-RR-Authorization "
        "inside the tunnel) then need a listener without it (docs/clients.md).",
    )
    loader.add_option(
        "rr_max_held_requests",
        int,
        20,
        "Most requests of one proxy this rr process holds for approval at once; more are answered 429 approval-capacity (0: no limit).",
    )
    loader.add_option(
        "rr_inspect_limit",
        int,
        1024 * 1024,
        "Largest request body (bytes) rr reads for body rules and for a form's _method field; a larger body is "
        "refused with 413 when body rules apply or it is an urlencoded form (or a POST without Content-Type).",
    )


def check(updated: set[str], *, running: bool, lazy: bool) -> None:
    """Refuse (OptionsError, rolled back) or adjust option changes. `running`: rr runs, so
    FROZEN_OPTIONS and rr's own cannot change; `lazy`: connection_strategy was set lazy before."""
    if running and (frozen := sorted(n for n in updated if n in FROZEN_OPTIONS or n.startswith("rr_"))):
        # mitmweb's options editor (anyone with the web password) or a script: refused and rolled back
        raise exceptions.OptionsError(f"rr: {', '.join(frozen)} cannot change while rr runs (they decide where secrets may go); restart rr to change them")
    if "proxy_debug" in updated and ctx.options.proxy_debug:
        raise exceptions.OptionsError("rr refuses proxy_debug: it logs the bytes sent upstream, injected secrets included")
    if "ssl_insecure" in updated and ctx.options.ssl_insecure:
        logger.warning("ssl_insecure is set: rr sends secrets to upstreams whose certificates it does not verify (a hostile DNS answer gets them)")
    if "rr_upstream_timeout" in updated and ctx.options.rr_upstream_timeout >= 0:
        old = ctx.options.rr_upstream_timeout
        logger.warning(
            "rr_upstream_timeout is deprecated (it cut off whole responses, even ones still streaming): "
            "rr sets rr_first_byte_timeout=%d and rr_idle_timeout=%d from it; set those (and rr_connect_timeout) instead",
            old,
            old,
        )
        ctx.options.update(rr_first_byte_timeout=old, rr_idle_timeout=old, rr_upstream_timeout=-1)
    if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
        # Eager connects upstream on CONNECT, before rr has decided anything.
        if lazy:  # changed at run time (mitmweb's options editor, `set`): refused and rolled back
            raise exceptions.OptionsError(LAZY_ONLY)
        logger.info("rr sets connection_strategy=lazy: nothing connects upstream before a decision")
        ctx.options.update(connection_strategy="lazy")
