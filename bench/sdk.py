"""SDK: cached `get()` against a plain dict lookup, and cold `get()` over HTTP.

    .venv/bin/python bench/sdk.py                # SQLite in a temporary directory
    .venv/bin/python bench/sdk.py --calls 2000000 --cold 1000

1. Cached: `client.get("support-bot", tenant="acme")` on a warm cache, against a plain dict
   lookup of the same Prompt object (`prompts["support-bot"]`), each in its own tight loop,
   interleaved for 5 rounds; the ratio is of the best round of each (target >= 0.2x).
2. Cold: `client.get(...)` for a tenant not yet cached (a resolve over real HTTP to a
   separate uvicorn process as `serve` runs it, plus the disk snapshot write), against a raw
   `httpx.Client.get` of the same resolve URL on the same keep-alive connection pool.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.sdk import PromptClient
from promptrecord.settings import Settings

ACTOR = Actor("bench", "bench")
NAME = "support-bot"
CONTENT: dict[str, Any] = {
    "type": "chat",
    "messages": [
        {"role": "system", "content": "You help {{ company }} customers. Be brief."},
        {"role": "user", "content": "{{ question }}"},
    ],
    "model": {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929", "temperature": 0.2},
}


def workspace(settings: Settings) -> str:
    app = PromptRecord(env=settings.eventsourcing_env())
    _, token = app.create_workspace("bench-sdk")
    app.create_prompt("bench-sdk", ACTOR, name=NAME, content=CONTENT)
    app.promote("bench-sdk", NAME, "production", 1, ACTOR)
    app.close()
    return token


def start_server(database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PROMPTRECORD_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    server = Path(__file__).with_name("_server.py")
    process = subprocess.Popen([sys.executable, str(server), str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.terminate()
            raise RuntimeError("the bench server did not start")
        time.sleep(0.1)


def cached(client: PromptClient, calls: int, rounds: int) -> tuple[float, float]:
    """Best calls/s of a dict lookup and of a cached get, rounds interleaved."""
    prompt = client.get(NAME, tenant="acme")
    prompts = {NAME: prompt}
    get = client.get
    best_dict = best_get = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            prompts[NAME]
        best_dict = max(best_dict, calls / (time.perf_counter() - started))
        started = time.perf_counter()
        for _ in range(calls):
            get(NAME, tenant="acme")
        best_get = max(best_get, calls / (time.perf_counter() - started))
        assert get(NAME, tenant="acme") is prompt
    return best_dict, best_get


def cold(
    client: PromptClient, base: str, token: str, count: int
) -> tuple[list[float], list[float]]:
    """Latencies (s) of cold gets (a new tenant each) and of raw httpx GETs, interleaved."""
    raw = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
    sdk_times: list[float] = []
    raw_times: list[float] = []
    for index in range(count):
        started = time.perf_counter()
        raw.get(
            f"/v1/prompts/{NAME}/resolve",
            params={"environment": "production", "tenant": f"raw-{index}"},
        ).json()
        raw_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.get(NAME, tenant=f"tenant-{index}")
        sdk_times.append(time.perf_counter() - started)
    raw.close()
    assert client.stats.misses == count + 2, client.stats
    return sdk_times, raw_times


def percentiles(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        database_url = f"sqlite:///{directory}/bench.db"
        token = workspace(Settings(database_url=database_url))
        process, base = start_server(database_url)
        try:
            client = PromptClient(base, token, cache_ttl=3600, fallback_dir=f"{directory}/snap")
            client.get(NAME)  # connect once
            per_dict, per_get = cached(client, args.calls, args.rounds)
            print(f"dict lookup            {per_dict / 1e6:7.2f} M/s  ({1e9 / per_dict:6.1f} ns)")
            print(f"cached get()           {per_get / 1e6:7.2f} M/s  ({1e9 / per_get:6.1f} ns)")
            print(f"cached get / dict lookup  {per_get / per_dict:.3f}  (target >= 0.2)")
            sdk_times, raw_times = cold(client, base, token, args.cold)
            print(f"cold get() over HTTP   {percentiles(sdk_times)}  ({args.cold} gets)")
            print(f"raw httpx GET resolve  {percentiles(raw_times)}")
            ratio = statistics.median(sdk_times) / statistics.median(raw_times)
            print(f"cold get / raw GET, medians  {ratio:.2f}x")
            client.close()
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
