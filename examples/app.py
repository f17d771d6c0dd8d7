"""A small application that answers support questions with the prompt production serves.

    PROMPTRECORD_URL=http://127.0.0.1:8000 PROMPTRECORD_API_KEY=pr_… python app.py acme

It prints the version it got for the tenant and the compiled messages it would send to the
model. The client caches answers for 60 s, refreshes them in the background, and keeps
serving the last good answer (from memory, then from disk) when the server is down.
"""

from __future__ import annotations

import os
import sys

from promptrecord.sdk import PromptClient


def main() -> int:
    tenant = sys.argv[1] if len(sys.argv) > 1 else "acme"
    client = PromptClient(
        os.environ.get("PROMPTRECORD_URL", "http://127.0.0.1:8000"),
        os.environ["PROMPTRECORD_API_KEY"],
        environment="production",
        cache_ttl=60,
    )
    try:
        prompt = client.get("support-bot", tenant=tenant)
        print(f"support-bot v{prompt.version} for tenant {tenant}")
        compiled = prompt.compile(company="Acme", question="Where is my order?")
        for message in compiled if isinstance(compiled, list) else [compiled]:
            print(message)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
