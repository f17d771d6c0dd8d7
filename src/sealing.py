"""Sealing of webhook signing secrets: Fernet encryption, so the event log never holds one in
the clear, and the `whsec_…` secrets themselves.

The key comes from `PROMPTRECORD_SECRET_KEY` (Fernet keys, comma-separated, newest first: the
first seals, every one unseals, so the key can be rotated), else from the key file
`PROMPTRECORD_SECRET_KEY_FILE`, created with mode 0600 on first use.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

if TYPE_CHECKING:
    from promptrecord.settings import Settings

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
GENERATE_HINT = (
    'make one with: python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


class SealingError(Exception):
    """The key is missing or malformed, or a sealed secret does not open with it."""


def new_webhook_secret() -> str:
    """A signing secret in the Standard Webhooks format: `whsec_` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key bytes an HMAC is computed with: the base64 part of `whsec_…` decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def _fernet(key: str, where: str) -> Fernet:
    try:
        return Fernet(key.strip().encode())
    except (ValueError, TypeError):
        raise SealingError(
            f"{where} is not a Fernet key (32 url-safe base64-encoded bytes); {GENERATE_HINT}"
        ) from None


def _read_or_create(path: Path) -> str:
    """The key in `path`, made first if missing. Made aside and linked into place, so two
    processes starting together agree on one key and none reads a half-written file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as out:
                out.write(Fernet.generate_key().decode() + "\n")
            try:
                os.link(aside, path)
                log.warning(
                    "created the webhook sealing key %s; keep it with the database (without "
                    "it no webhook secret can be opened), or set PROMPTRECORD_SECRET_KEY",
                    path,
                )
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            aside.unlink(missing_ok=True)
    return path.read_text().strip()


class Sealer:
    """Seals and unseals secrets with the configured key(s)."""

    def __init__(self, keys: list[str], where: str = "the sealing key") -> None:
        if not keys:
            raise SealingError(f"no sealing key given; {GENERATE_HINT}")
        self._fernet = MultiFernet([_fernet(key, where) for key in keys])

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        if settings.secret_key is not None:
            keys = [k for k in settings.secret_key.get_secret_value().split(",") if k.strip()]
            return cls(keys, "PROMPTRECORD_SECRET_KEY")
        path = Path(settings.secret_key_file)
        return cls([_read_or_create(path)], f"the key file {path}")

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError, TypeError):
            raise SealingError(
                "a webhook secret does not open with this sealing key: PROMPTRECORD_SECRET_KEY "
                "(or the key file) differs from the one that sealed it; restore that key, or "
                "rotate the endpoint's secret"
            ) from None
