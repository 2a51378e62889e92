"""rr_addon.core.types: the request facts' one-field copy."""

import dataclasses

from rr_addon.core.types import RequestFacts


def test_with_body_is_dataclasses_replace_for_every_field():
    # every field set to a value unlike its default: a field added later and not copied fails here
    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(RequestFacts)}
    values["port"] = 8443
    values["headers"] = (("a", "1"),)
    values["tunnel_authorization"] = ("Basic x",)
    facts = RequestFacts(**values)
    for body in (b"{}", b"", None):
        assert facts.with_body(body) == dataclasses.replace(facts, body=body)
        assert [getattr(facts.with_body(body), f.name) for f in dataclasses.fields(RequestFacts)] == [
            getattr(dataclasses.replace(facts, body=body), f.name) for f in dataclasses.fields(RequestFacts)
        ]
