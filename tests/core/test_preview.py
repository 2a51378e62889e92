"""The body preview of a held request (rr_addon.core.preview) never shows a secret rr knows of."""

from __future__ import annotations

import pytest

from rr_addon.core.preview import body_preview, masked, spellings

KEY = "KEY+held/caller:1"  # a caller key with characters percent-encoding and JSON escapes change


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"note":"KEY+held\\/caller:1"}', id="json-escaped-slash"),
        pytest.param(b'{"note":"\\u004bEY+held/caller:1"}', id="json-unicode-escape"),
        pytest.param(b"note=KEY%2Bheld%2Fcaller%3A1&x=1", id="form-encoded"),
        pytest.param(b"note=KEY%2Bheld/caller%3A1", id="percent-encoded-slash-kept"),
        pytest.param(b"note=%4bEY%2bheld%2fc%61ller:1", id="percent-encoded-any-character-any-case"),
    ],
)
def test_an_encoded_spelling_of_the_caller_key_is_masked(body):
    shown = body_preview(body, (KEY,))
    assert "caller" not in shown and "****" in shown


def test_a_url_with_the_key_percent_encoded_in_any_way_is_masked():
    assert masked("https://h/x?k=%4B%45Y%2bheld%2Fcaller%3a1&y=2", spellings([KEY])) == "https://h/x?k=****&y=2"
    assert masked("a b a+b a%20b", spellings(["a b"])) == "**** **** ****"
