"""Webhook signatures: `X-Signature-256` (plain HMAC) and the Standard Webhooks headers.

A secret looks like `whsec_<base64 of 24 random bytes>`. The Standard Webhooks signature
uses the decoded bytes as the HMAC key over `{webhook-id}.{webhook-timestamp}.{body}`, so any
of their libraries verifies it (`standardwebhooks.Webhook(secret).verify(body, headers)`).
`X-Signature-256` is the GitHub-style check for receivers with no such library: the key is
the whole secret string as UTF-8, the message the body alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"


def _standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def body_signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>` keyed by the secret string."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def standard_signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` entry of `webhook-signature`."""
    message = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_standard_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The signing headers of one attempt. `secrets` are the valid ones, current first:
    during a rotation's overlap every one signs `webhook-signature` (space-separated), so a
    receiver holding either secret verifies; `X-Signature-256` carries the current one."""
    if not secrets:
        raise ValueError("a webhook needs at least one secret to sign with")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(secret, webhook_id, timestamp, body) for secret in secrets
        ),
        "X-Signature-256": body_signature(secrets[0], body),
    }


__all__ = ["SECRET_PREFIX", "body_signature", "signature_headers", "standard_signature"]
