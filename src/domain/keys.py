"""API key tokens `pr_<id>_<secret>`: made here, only the secret's hash is ever stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "pr_"


@dataclass(frozen=True)
class KeyToken:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{PREFIX}{self.key_id}_{self.secret}"


def new_token() -> KeyToken:
    # The key id is hex, so the first '_' after the prefix always ends it.
    return KeyToken(secrets.token_hex(8), secrets.token_urlsafe(32))


def hash_secret(secret: str) -> str:
    # Secrets are 256 random bits: a fast hash is enough, no stretching needed.
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> KeyToken | None:
    if not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return KeyToken(key_id, secret)


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
