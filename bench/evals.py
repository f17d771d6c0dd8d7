"""Eval run throughput: does `execute_run` keep its concurrency limit busy?

312 examples, two arms (two versions on two Claude models), an LLM judge repeated 3 times
per arm: 2 + 2 x 3 = 8 model calls per example, 2,496 in all, through the official Anthropic
SDK against the stand-in server of tests/fakes (one server, so that its count of requests in
flight is the run's). Every answer takes 200 ms, and the stand-in answers any number of
requests at once. With ``concurrency`` 16 the ideal wall
time is ``calls x 0.2 s / 16``; the ratio of the measured wall time of `execute_run` to that
ideal is the figure of merit (target <= 1.25). The store is the embedded SQLite default, in a
temporary directory.

    .venv/bin/python bench/evals.py [--examples 312] [--concurrency 16] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.settings import Settings
from promptrecord.workers.executor import ExecutorConfig, execute_run

FAKES = Path(__file__).resolve().parent.parent / "tests" / "fakes" / "model_servers.py"
WS = "bench"
ACTOR = Actor("key-bench", "bench")
JUDGE_VERDICT = '{"correct": true, "score": 4}'


def model_servers() -> ModuleType:
    """tests/fakes/model_servers.py, loaded by path (bench is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_model_servers", FAKES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def reply(body: dict[str, Any]) -> str:
    """A judge call gets a verdict; an arm call gets some answer."""
    return JUDGE_VERDICT if "strict grader" in str(body.get("system")) else "answer"


def setup(app: PromptRecord, examples: int, concurrency: int) -> str:
    app.create_workspace(WS)
    app.create_prompt(WS, ACTOR, name="support")
    for provider, model in (("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-sonnet-4-5")):
        app.commit_version(
            WS,
            "support",
            {
                "type": "chat",
                "messages": [
                    {"role": "system", "content": f"Answer briefly ({model})."},
                    {"role": "user", "content": "Question {{ n }}"},
                ],
                "model": {"provider": provider, "name": model, "max_tokens": 64},
            },
            ACTOR,
        )
    app.create_dataset(
        WS,
        "faq",
        ACTOR,
        examples=[
            {"id": f"q{n}", "inputs": {"n": n}, "reference": f"answer {n}"}
            for n in range(1, examples + 1)
        ],
    )
    judge = {
        "type": "judge",
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "rubric": "Is it the reference answer?",
        "repeats": 3,
    }
    run_id: str = app.request_eval(
        WS,
        ACTOR,
        prompt="support",
        candidate=2,
        baseline=1,
        dataset="faq",
        graders=[judge],
        thresholds={"min_examples": 30},
        concurrency=concurrency,
    ).value
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=312)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()

    fakes = model_servers()
    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-evals-"))
        server = stack.enter_context(fakes.FakeModelServer("anthropic").serving())
        server.latency = args.latency
        server.reply = reply
        settings = Settings(database_url=f"sqlite:///{folder}/promptrecord.db")
        app = PromptRecord(env=settings.eventsourcing_env())
        stack.callback(app.close)
        run_id = setup(app, args.examples, args.concurrency)
        config = ExecutorConfig(
            anthropic_api_key="sk-bench",
            anthropic_base_url=server.base_url,
            environ={},
        )

        cpu = time.process_time()
        started = time.perf_counter()
        outcome = execute_run(app, WS, run_id, config, "bench")
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu

        calls = len(server.requests)
        ideal = calls * args.latency / args.concurrency
        run = app.eval_run(WS, run_id)
        assert run.verdict is not None
        print(f"nproc {os.cpu_count()}, Python {sys.version.split()[0]}")
        print(
            f"outcome {outcome.status}, {outcome.recorded} examples recorded, "
            f"passed {outcome.passed}, verdict calls {run.verdict['usage']['calls']}"
        )
        print(f"calls      {calls}")
        print(f"wall       {wall:.2f} s   (process CPU {cpu:.2f} s)")
        print(f"ideal      {ideal:.2f} s   (calls x {args.latency} s / {args.concurrency})")
        print(f"ratio      {wall / ideal:.3f}   (target <= 1.25)")
        print(f"max in flight {server.max_in_flight} (limit {args.concurrency})")


if __name__ == "__main__":
    main()
