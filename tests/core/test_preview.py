"""The body preview of a held request (rr_addon.core.preview) never shows a secret rr knows of."""

from __future__ import annotations

import pytest

from rr_addon.core.preview import body_preview

KEY = "KEY+held/caller:1"  # a caller key with characters percent-encoding and JSON escapes change


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"note":"KEY+held\\/caller:1"}', id="json-escaped-slash"),
        pytest.param(b'{"note":"\\u004bEY+held/caller:1"}', id="json-unicode-escape"),
        pytest.param(b"note=KEY%2Bheld%2Fcaller%3A1&x=1", id="form-encoded"),
        pytest.param(b"note=KEY%2Bheld/caller%3A1", id="percent-encoded-slash-kept"),
    ],
)
def test_an_encoded_spelling_of_the_caller_key_is_masked(body):
    shown = body_preview(body, (KEY,))
    assert "caller" not in shown and "****" in shown
