"""The business-continuity-token file is parsed like GoCD's ``AuthToken`` (Java Properties)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gocd_ha_operator.gocd.token import (
    BCToken,
    TokenFileError,
    parse_properties,
    parse_token,
    read_token_file,
)


@pytest.mark.parametrize(
    "text",
    [
        "bc_token = badger",
        "bc_token:badger",
        "bc_token=badger",
        "bc_token badger",
        "  bc_token   =   badger   \n",
        "# a comment\n! another comment\n\nbc_token : badger\n",
        "bc_token=bad\\\n    ger",  # a continuation line, as Properties allows
        "bc\\u005ftoken=badger",  # a unicode escape in the key
    ],
)
def test_accepted_forms(text: str) -> None:
    token = parse_token(text)
    assert (token.user, token.password) == ("bc_token", "badger")


def test_separator_inside_value_is_kept() -> None:
    token = parse_token("user = pa:ss=word")
    assert token.password == "pa:ss=word"


def test_escaped_separator_in_key() -> None:
    assert parse_properties("a\\=b = c") == {"a=b": "c"}


def test_comment_after_continuation_is_value() -> None:
    assert parse_properties("k = v\\\n# not a comment") == {"k": "v# not a comment"}


@pytest.mark.parametrize(
    ("text", "found"),
    [("", 0), ("# only a comment\n", 0), ("a=1\nb=2\n", 2)],
)
def test_not_exactly_one_credential(text: str, found: int) -> None:
    with pytest.raises(TokenFileError, match="should contain exactly one credential") as info:
        parse_token(text)
    assert f"found {found}" in str(info.value)


def test_empty_password_is_refused() -> None:
    with pytest.raises(TokenFileError, match="empty password"):
        parse_token("user =   ")


def test_password_never_in_repr_or_errors(tmp_path: Path) -> None:
    token = parse_token("gocdha = s3cr3t-value")
    assert "s3cr3t-value" not in repr(token)
    path = tmp_path / "token"
    path.write_text("a = s3cr3t-value\nb = s3cr3t-value\n")
    with pytest.raises(TokenFileError) as info:
        read_token_file(path)
    assert "s3cr3t-value" not in str(info.value)


def test_read_token_file_missing(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="not found"):
        read_token_file(tmp_path / "absent")


def test_basic_auth_round_trip() -> None:
    token = BCToken("bc_token", "badger")
    header = token.basic_auth_header()
    assert header == "Basic " + base64.b64encode(b"bc_token:badger").decode()
    assert token.matches_basic_auth(header)
    assert not token.matches_basic_auth(BCToken("bc_token", "badgeR").basic_auth_header())
    assert not token.matches_basic_auth(BCToken("other", "badger").basic_auth_header())
    assert not token.matches_basic_auth(None)
    assert not token.matches_basic_auth("Bearer abc")
    assert not token.matches_basic_auth("Basic !!!not-base64")
