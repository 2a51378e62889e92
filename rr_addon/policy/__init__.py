"""The policy language: the models of the YAML (pydantic) and the parsers and engines of its values.

The bottom layer (docs/architecture.md): host patterns, RE2, JSONPath, time zones,
paths, bodies, filters, redaction detectors, JSON Schema validation, and the pure
parts of identity settings. It imports nothing else of rr but the reason sentences
(`rr_addon.core.reasons`) and the decision values (`rr_addon.core.types`).
"""
