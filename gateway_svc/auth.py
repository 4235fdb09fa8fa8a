"""Token auth at the gateway (`auth_token_file`): a call must carry `authorization: Bearer <token>`,
whatever door it came by (gRPC metadata, HTTP headers). The token stays here: it never travels on
to the tiers (they authenticate the gateway, by mTLS)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

from splitserve.core.errors import Unauthenticated


class Tokens:
    """The accepted tokens, one a line of the token file."""

    def __init__(self, path: str):
        self.tokens = [line.strip().encode() for line in Path(path).read_text().splitlines() if line.strip()]
        if not self.tokens:
            raise ValueError(f"auth token file {path} has no tokens")

    def check(self, metadata: Iterable[tuple[str, str]]) -> None:
        """Raises Unauthenticated unless `metadata` carries `authorization: Bearer <an accepted token>`."""
        scheme, _, token = str(dict(metadata).get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.encode(), t) for t in self.tokens):
            raise Unauthenticated("missing or unknown token: send 'authorization: Bearer <token>'")
