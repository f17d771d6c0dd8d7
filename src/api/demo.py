"""`promptrecord demo`: a scripted tour of the ledger on a fresh embedded database."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from promptrecord.api.cli_evals import verdict_lines
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import DomainError
from promptrecord.domain.resolution import resolve
from promptrecord.domain.templates import render
from promptrecord.projections.live import LiveState
from promptrecord.settings import Settings
from promptrecord.workers.executor import ExecutorConfig, execute_run

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
PROMPT = "support-bot"
ENV = "production"


def _content(system: str, offline_accuracy: float) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "{{ question }}"},
        ],
        "model": {
            "provider": "anthropic",
            "name": "claude-sonnet-4-5-20250929",
            "temperature": 0.2,
            "max_tokens": 512,
            # How often the offline provider the demo's eval uses gives the reference answer:
            # it stands in for how good each version is, without a network or an API key.
            "offline_accuracy": offline_accuracy,
        },
    }


V1 = _content("You are the support assistant of {{ company }}. Answer briefly and politely.", 0.75)
V2 = _content(
    "You are the support assistant of {{ company }}. Answer briefly, politely and accurately.",
    0.95,
)
DATASET = "support-golden"
# The offline provider answers with the [[answer: ...]] marker of the question (or, by the
# version's offline_accuracy, misses it): the reference answers live in the questions.
QUESTIONS = [
    ("Where is my order?", "Your tracking link is in the confirmation email."),
    ("Can I get a refund?", "Yes, within 30 days of purchase."),
    ("How do I reset my password?", "Use 'Forgot password' on the sign-in page."),
    ("Do you ship abroad?", "Yes, to 40 countries."),
    ("Can I change my delivery address?", "Yes, until the order ships."),
    ("Is there a student discount?", "Yes, 15% with a student email."),
    ("How long does delivery take?", "Two to four working days."),
    ("Can I cancel my subscription?", "Yes, any time from your account page."),
    ("Do you have gift cards?", "Yes, from 10 to 200 euros."),
    ("Where are you based?", "In Lyon, France."),
    ("Can I pay by invoice?", "Yes, for business accounts."),
    ("Is my data stored in the EU?", "Yes, in Frankfurt."),
]


@dataclass
class Tour:
    app: PromptRecord
    live: LiveState
    out: TextIO
    as_json: bool
    steps: list[dict[str, Any]] = field(default_factory=list)

    def step(self, title: str, position: int | None) -> None:
        self.live.wait_for(position or 0)
        now = self.app.clock()
        rows = []
        for tenant in TENANTS:
            try:
                answer = self.live.read(
                    lambda s, t=tenant: resolve(s, "demo", PROMPT, ENV, t, None, now)  # type: ignore[misc]
                )
            except DomainError as error:
                rows.append({"tenant": tenant, "error": error.detail})
                continue
            row: dict[str, Any] = {
                "tenant": tenant,
                "version": answer.version.number,
                "reason": answer.reason,
            }
            if answer.rollout is not None:
                row["bucket"] = round(answer.rollout.bucket or 0.0, 4)
                row["share"] = answer.rollout.share
                row["arm"] = answer.rollout.arm
            rows.append(row)
        self.steps.append({"step": title, "position": self.live.position, "tenants": rows})
        if self.as_json:
            return
        print(f"\n{len(self.steps)}. {title}   (log position {self.live.position})", file=self.out)
        for row in rows:
            if "error" in row:
                print(f"     {row['tenant']:<9} -> {row['error']}", file=self.out)
                continue
            detail = row["reason"]
            if "bucket" in row:
                detail = (
                    f"rollout, bucket {row['bucket']:.4f} vs share {row['share']:.2f}"
                    f" -> {row['arm']}"
                )
            print(f"     {row['tenant']:<9} -> v{row['version']}  ({detail})", file=self.out)


def run_demo(out: TextIO = sys.stdout, as_json: bool = False, directory: Path | None = None) -> int:
    """Commit, promote, canary, pin, roll back; print what five tenants get after each step;
    then evaluate v2 against what production serves and print the gate's verdict."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="promptrecord-demo-") as scratch:
        db = (directory or Path(scratch)) / "demo.db"
        db.unlink(missing_ok=True)
        settings = Settings(database_url=f"sqlite:///{db}")
        app = PromptRecord(env=settings.eventsourcing_env())
        live = LiveState(app)
        tour = Tour(app, live, out, as_json)
        app.create_workspace("demo", "Demo workspace")
        alice = Actor("demo-alice", "alice (editor)")
        bob = Actor("demo-bob", "bob (on call)")
        if not as_json:
            print(f"promptrecord demo — a fresh embedded database at {db}", file=out)

        app.create_prompt("demo", alice, name=PROMPT, content=V1, message="first version")
        result = app.commit_version("demo", PROMPT, V2, alice, message="also be accurate")
        tour.step("committed v1 and v2 of support-bot; nothing deployed yet", result.position)

        result = app.promote("demo", PROMPT, ENV, 1, alice, reason="launch")
        tour.step("promoted v1 to production", result.position)

        result = app.start_rollout("demo", PROMPT, ENV, 2, 0.10, alice, reason="canary v2")
        tour.step("started a 10% canary of v2, bucketed by tenant", result.position)

        result = app.pin("demo", "acme", PROMPT, ENV, 2, bob, reason="acme asked for v2 early")
        tour.step("pinned tenant acme to v2 for 7 days", result.position)

        result = app.rollback("demo", PROMPT, ENV, "v2 made answers longer", bob)
        tour.step(
            "rolled back (kill switch): the canary ends, v1 serves; the pin on acme holds",
            result.position,
        )

        evaluation = _evaluate(app, alice, out, as_json, len(tour.steps) + 1)
        rendered = render(V1, {"company": "Acme", "question": "Where is my order?"})
        elapsed = time.perf_counter() - started
        events = max(live.position, app.written)
        live.stop()
        app.close()
    if as_json:
        payload = {
            "steps": tour.steps,
            "eval": evaluation,
            "events": events,
            "seconds": round(elapsed, 3),
        }
        print(json.dumps(payload, indent=2, default=str), file=out)
        return 0
    assert rendered.messages is not None
    print("\nv1 compiled for Acme:", file=out)
    for message in rendered.messages:
        print(f"     {message['role']:<9} {message['content']}", file=out)
    print(
        f"\n{events} events recorded in {elapsed:.2f} s; every answer above came from them.\n"
        "Next: `promptrecord serve` starts the API on http://127.0.0.1:8000 with an embedded\n"
        "database at ./promptrecord.db and writes the first admin key to "
        "./promptrecord-admin.key.",
        file=out,
    )
    return 0


def _evaluate(
    app: PromptRecord, actor: Actor, out: TextIO, as_json: bool, number: int
) -> dict[str, Any]:
    """Run v2 against what production serves on a small dataset; return the verdict."""
    examples = [
        {
            "id": f"faq-{index:02d}",
            "inputs": {"company": "Acme", "question": f"{question} [[answer: {answer}]]"},
            "reference": answer,
        }
        for index, (question, answer) in enumerate(QUESTIONS, start=1)
    ]
    app.create_dataset("demo", DATASET, actor, description="FAQ answers", examples=examples)
    result = app.request_eval(
        "demo",
        actor,
        PROMPT,
        candidate=2,
        dataset=DATASET,
        graders=[{"type": "exact"}],
        thresholds={"min_examples": 10},
        against=ENV,
        provider="offline",
        reason="demo",
    )
    run_id: str = result.value
    # `promptrecord serve` hands a requested run to its workers; the demo has none running,
    # so it carries the run out itself, synchronously, as a worker would. Offline: no network.
    execute_run(app, "demo", run_id, ExecutorConfig(environ={}), worker="demo")
    run = app.eval_run("demo", run_id)
    verdict: dict[str, Any] = dict(run.verdict or {})
    if not as_json:
        outcome = "PASSED" if verdict.get("passed") else "BLOCKED"
        print(
            f"\n{number}. eval gate: v2 against v{run.spec['baseline']}, what {ENV} serves: "
            f"{outcome}\n   {DATASET}, {len(examples)} examples, offline provider, exact match",
            file=out,
        )
        for line in verdict_lines(verdict):
            print(f"   {line}", file=out)
    return {"run_id": run_id, "baseline": run.spec["baseline"], **verdict}
