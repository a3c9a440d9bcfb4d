"""The ``business-continuity-token`` file: one ``user = password`` credential.

GoCD (``AuthToken.java``, 18.8 - 21.2) loaded this file with ``java.util.Properties`` and required
exactly one entry. The operator keeps that file format for both standby modes so that one Secret
(``<name>-bc-token``) serves the Warm dashboard and the Cold sync agent alike, and a token written
for GoCD works here unchanged. The parser below follows the ``Properties.load`` rules (comments,
the three separators, escapes, line continuations) so that the two never disagree about which
credential a file holds.

The password never appears in ``repr``, logs, exceptions or status: ``BCToken.__repr__`` hides it.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass, field
from pathlib import Path

#: The error GoCD gave for a file with zero or several entries; kept so users recognise it.
EXACTLY_ONE_MESSAGE = "The `business-continuity-token` file should contain exactly one credential."

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_WHITESPACE = " \t\f"


class TokenFileError(ValueError):
    """The token file is missing, unreadable or does not hold exactly one usable credential.

    Messages name the file and the problem, never any part of its content.
    """


@dataclass(frozen=True)
class BCToken:
    """One business-continuity credential; ``password`` is excluded from ``repr``."""

    user: str
    password: str = field(repr=False)

    def basic_auth_header(self) -> str:
        """The ``Authorization`` header value GoCD's standby sent: ``Basic base64(user:pass)``."""
        raw = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def matches_basic_auth(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries exactly this credential.

        Compared in constant time over the whole ``user:password`` so that response timing does
        not reveal how much of a guess was right.
        """
        if not header:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            presented = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            return False
        expected = f"{self.user}:{self.password}".encode()
        return hmac.compare_digest(presented, expected)


def _logical_lines(text: str) -> list[str]:
    """Split into ``Properties`` logical lines: comments dropped, continuations joined."""
    lines: list[str] = []
    pending: str | None = None
    for raw_line in text.splitlines():
        line = raw_line.lstrip(_WHITESPACE)
        if pending is None and (not line or line[0] in "#!"):
            continue
        # A line ends in a continuation when it ends with an odd number of backslashes.
        trailing = len(line) - len(line.rstrip("\\"))
        continued = trailing % 2 == 1
        if continued:
            line = line[:-1]
        pending = line if pending is None else pending + line
        if not continued:
            lines.append(pending)
            pending = None
    if pending is not None:
        lines.append(pending)
    return lines


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and i + 6 <= len(text):
            digits = text[i + 2 : i + 6]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise TokenFileError("malformed \\uXXXX escape in the token file") from None
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _split_entry(line: str) -> tuple[str, str]:
    """Split one logical line into key and value at the first unescaped ``=``, ``:`` or blank."""
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            i += 2
            continue
        if char in "=:" or char in _WHITESPACE:
            break
        i += 1
    key = line[:i]
    rest = line[i:].lstrip(_WHITESPACE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WHITESPACE)
    return _unescape(key), _unescape(rest)


def parse_properties(text: str) -> dict[str, str]:
    """Parse ``text`` like ``java.util.Properties.load``; a later duplicate key wins."""
    entries: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split_entry(line)
        entries[key] = value
    return entries


def parse_token(text: str, *, source: str = "business-continuity-token") -> BCToken:
    """The one credential in a token file's text.

    GoCD trimmed the user and the password; so do we. An empty user or password is refused
    (GoCD would have accepted it): an empty secret protects nothing.
    """
    entries = parse_properties(text)
    if len(entries) != 1:
        raise TokenFileError(f"{source}: {EXACTLY_ONE_MESSAGE} (found {len(entries)})")
    ((user, password),) = entries.items()
    user, password = user.strip(), password.strip()
    if not user:
        raise TokenFileError(f"{source}: the credential has an empty user name")
    if not password:
        raise TokenFileError(f"{source}: the credential has an empty password")
    if ":" in user:
        # Unreachable through Properties syntax unless escaped; Basic auth could not carry it.
        raise TokenFileError(f"{source}: the user name must not contain ':'")
    return BCToken(user=user, password=password)


def read_token_file(path: str | Path) -> BCToken:
    """Read and parse the token file at ``path`` (re-read on every use, as GoCD did)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TokenFileError(f"{path}: token file not found") from None
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read token file: {exc.strerror}") from None
    # Properties.load(InputStream) reads ISO-8859-1; UTF-8 is what a Kubernetes Secret holds.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_token(text, source=str(path))
