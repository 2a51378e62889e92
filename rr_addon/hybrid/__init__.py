"""Hybrid deployment: a control plane that serves the configuration to data
planes in other networks, which need no database access (docs/hybrid.md).

    pki        the control plane's CA, its server certificate, data-plane client certificates
    sealing    configuration sealed for one data plane (X25519 + AES-GCM) and signed (Ed25519)
    payload    a stored configuration <-> the JSON document that is sealed
    bundle     the file `rr control-plane issue-dataplane` writes: what a data plane needs to join
    registry   the control plane's tables: its keys, issued data planes, admin tokens, reported usage
    server     `rr control-plane serve`: HTTPS with mutual TLS (stdlib threads)
    admin_api  the control plane's `/v1/admin/…` endpoints behind `--server URL`
    remote     the admin credential file and the HTTPS client of those endpoints
    link       the data plane side: pull, cache, spool and report
    approvals  held requests of a data plane, kept at the control plane (both sides)
    spool      the data plane's local SQLite: audit records waiting for delivery, meter counters
    dataplane  the few lines the addon calls
    status     `rr status` in a data plane's home
"""
