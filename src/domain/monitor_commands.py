"""Commands on a prompt's monitoring: configure the online judge and the drift schedule, and
record the drift checks the scheduler makes."""

from __future__ import annotations

from typing import Any

from promptrecord.domain.app_base import CommandBase, CommandResult
from promptrecord.domain.base import Actor
from promptrecord.domain.errors import DomainError, NotFound
from promptrecord.domain.evals import Dataset, check_dataset_name
from promptrecord.domain.monitors import Monitor, normalise_drift, normalise_judge

# The actor of the eval runs the drift scheduler requests: a reference for drift is never a
# drift run itself, so these are told apart by who asked.
DRIFT_ACTOR = Actor(key_id="system:drift", key_name="promptrecord drift monitor")


class MonitorCommands(CommandBase):
    """`configure_monitor` (the API's PUT), `record_drift_check` (the drift scheduler)."""

    def monitor(self, workspace: str, prompt: str, copy: bool = True) -> Monitor:
        return self._get(
            Monitor,
            Monitor.create_id(workspace, prompt),
            NotFound(
                f"prompt {prompt!r} has no monitoring configured; PUT "
                f"/v1/prompts/{prompt}/monitoring to set it up",
                field="name",
                code="monitor_not_found",
            ),
            copy,
        )

    def find_monitor(self, workspace: str, prompt: str) -> Monitor | None:
        found = self._find(Monitor.create_id(workspace, prompt))
        assert found is None or isinstance(found, Monitor)
        return found

    def configure_monitor(
        self,
        workspace: str,
        prompt: str,
        judge: Any,
        drift: Any,
        actor: Actor,
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Set (replace) both parts of a prompt's monitoring; null switches a part off."""
        ws = self.workspace(workspace, copy=False)
        self.prompt(workspace, prompt, copy=False)
        judge_config = normalise_judge(judge)
        drift_config = normalise_drift(drift)
        if drift_config is not None:
            check_dataset_name(drift_config["dataset"], field="drift.dataset")
            if self._find(Dataset.create_id(workspace, drift_config["dataset"])) is None:
                raise NotFound(
                    f"dataset {drift_config['dataset']!r} does not exist in this workspace; "
                    "create it with the examples drift re-runs",
                    field="drift.dataset",
                    code="dataset_not_found",
                )
            for index, environment in enumerate(drift_config["environments"]):
                try:
                    ws.require_environment(environment)
                except DomainError as error:
                    error.field = f"drift.environments[{index}]"
                    raise
        now = self.clock()
        monitor = self.find_monitor(workspace, prompt)
        if monitor is None:
            monitor = Monitor(
                workspace=workspace, prompt=prompt, actor=actor.as_dict(), timestamp=now
            )
        self._expect(monitor, expected_revision, f"monitoring of {prompt!r}")
        monitor.configure(judge_config, drift_config, actor.as_dict(), now)
        return self._commit(monitor, value=monitor.version)

    def record_drift_check(
        self,
        workspace: str,
        prompt: str,
        environment: str,
        version: int,
        run_id: str,
        reference_run_id: str,
        win_rate: float,
        reference_win_rate: float,
    ) -> CommandResult:
        """Record the outcome of one drift run, and an alert when its win rate moved beyond
        the threshold from the reference's. The value is whether it alerted. A run already
        recorded is refused (409 `drift_already_checked`)."""
        monitor = self.monitor(workspace, prompt)
        check = {
            "environment": environment,
            "version": version,
            "run_id": run_id,
            "reference_run_id": reference_run_id,
            "win_rate": win_rate,
            "reference_win_rate": reference_win_rate,
            "delta": win_rate - reference_win_rate,
        }
        alerted = monitor.record_check(check, self.clock())
        return self._commit(monitor, value=alerted)


__all__ = ["DRIFT_ACTOR", "MonitorCommands"]
