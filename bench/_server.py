"""The API as `promptrecord serve` runs it, plus a constant-JSON route as the baseline.

With BENCH_LIVE_LISTEN=0 the live state polls only (no LISTEN/NOTIFY): the lag baseline.
"""

from __future__ import annotations

import functools
import gc
import os
import sys

import uvicorn

from promptrecord.api.app import create_app
from promptrecord.projections import live

if os.environ.get("BENCH_LIVE_LISTEN") == "0":
    live.LiveState.__init__ = functools.partialmethod(  # type: ignore[method-assign]
        live.LiveState.__init__, listen=False
    )

app = create_app()


@app.get("/bench/constant", include_in_schema=False)
async def constant() -> dict[str, object]:
    return {"prompt": "support-bot", "version": 1, "reason": "promoted"}


if __name__ == "__main__":
    gc.freeze()  # as `promptrecord serve` does
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
