"""The audit trail: one record per request (`records`), written off the request
path by a background writer to a JSON-lines file and the log (`writer`). The
database side (the `rr_audit` table's sink, retention, queries) is
`rr_addon.store.audit_store`."""
