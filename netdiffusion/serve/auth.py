"""Bearer-token auth. Tokens are kept only as SHA-256 digests and compared in constant time.

The digest's first 12 hex characters are the token's public id: quotas, job ownership and logs
use it, so a raw token never reaches the database or the logs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenStore:
    """The set of accepted tokens, held as digests."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests: list[bytes] = [token_digest(t) for t in dict.fromkeys(tokens) if t]

    def __len__(self) -> int:
        return len(self._digests)

    def identify(self, token: str) -> str | None:
        """The token's id, or None if it is not accepted.

        Compares against every stored digest (no early exit) with ``hmac.compare_digest`` so the
        time taken does not reveal which token or how much of it matched."""
        candidate = token_digest(token)
        match: bytes | None = None
        for digest in self._digests:
            if hmac.compare_digest(candidate, digest):
                match = digest
        return match.hex()[:12] if match is not None else None
