"""Proof that the stored event log is intact: hash chains, versions and positions, row by row.

`verify_log` reads the raw rows straight from the application's recorder (nothing cached)
in one pass ordered by position, and checks that

- positions (notification ids) run 1, 2, 3, … without a hole: a missing position is a
  deleted event (`gap`). promptrecord's recorders keep the log dense — SQLite numbers rows
  `max(rowid) + 1` and a rolled-back save leaves no trace; on PostgreSQL our recorder
  numbers rows `max + 1` under the table lock instead of spending a sequence value that a
  refused save would waste. So a hole is never legitimate and is reported as a problem, not
  a warning. Only the very last event of the whole log can vanish unseen: the next save
  reuses its position;
- each aggregate's versions run 1..N (`deleted` otherwise), and its positions increase with
  its versions (`reordered` otherwise);
- each event's `prev_hash` is the `event_digest` of the event before it, the first one's
  `""`. An aggregate whose chain breaks is read again on its own and its chain rebuilt from
  the links: an event that sits at another version than the one it was written at is
  `reordered`; an event whose digest no later event names was `edited` (or its successor's
  link was). The last event of an aggregate has no successor, so an edit to it shows only
  by other means (a deleted last event shows as a position `gap`);
- every row can be decoded (`unreadable` otherwise); a bad row never stops the run.

Memory grows with the number of aggregates (a few strings each, plus 8 bytes per event
for the positions), never with the events themselves: rows are read in batches.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import GENESIS_HASH, event_digest

DEFAULT_BATCH = 2000
KINDS = ("edited", "deleted", "reordered", "unreadable", "gap")

# The Created event fields that make up each aggregate's business key, in key order.
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "Workspace": ("slug",),
    "Prompt": ("workspace", "name"),
    "Deployment": ("workspace", "prompt", "environment"),
    "TenantPin": ("workspace", "tenant", "prompt", "environment"),
}


def describe(aggregate_type: str | None, key: tuple[str, ...] | None, aggregate_id: Any) -> str:
    """The thing an aggregate is, in the words of DESIGN.md: `prompt 'support-bot' (…)`."""
    if key is not None and aggregate_type in _KEY_FIELDS:
        if aggregate_type == "Workspace":
            return f"workspace {key[0]!r}"
        if aggregate_type == "Prompt":
            return f"prompt {key[1]!r} (workspace {key[0]!r})"
        if aggregate_type == "Deployment":
            return f"deployment of {key[1]!r} in {key[2]} (workspace {key[0]!r})"
        return f"pin of tenant {key[1]!r} on {key[2]!r} in {key[3]} (workspace {key[0]!r})"
    return f"{aggregate_type or 'aggregate'} {aggregate_id}"


@dataclass(frozen=True)
class Problem:
    """One way the stored log differs from what was written."""

    kind: str  # one of KINDS
    message: str  # a sentence naming the thing, its version and position
    aggregate_id: UUID | None = None
    aggregate_type: str | None = None
    key: tuple[str, ...] | None = None  # the business key, when its Created event is readable
    version: int | None = None
    position: int | None = None  # the notification id of the row at fault

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["aggregate_id"] = str(self.aggregate_id) if self.aggregate_id else None
        data["key"] = list(self.key) if self.key is not None else None
        return data


@dataclass
class VerifyReport:
    """What `verify_log` read and every problem it found."""

    events_checked: int = 0
    aggregates_checked: int = 0
    last_position: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "events_checked": self.events_checked,
            "aggregates_checked": self.aggregates_checked,
            "last_position": self.last_position,
            "problems": [problem.as_dict() for problem in self.problems],
        }


@dataclass(frozen=True)
class _Finding:
    """A problem before its aggregate's type and key are known (they may come later)."""

    kind: str
    detail: str
    aggregate_id: UUID | None = None
    version: int | None = None
    position: int | None = None
    through: int | None = None  # the last of a range of deleted versions


class _Trail:
    """What the single pass keeps of one aggregate: enough to check the next event."""

    __slots__ = ("digest", "key", "last_version", "positions", "suspect", "type_name")

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        self.key: tuple[str, ...] | None = None
        self.last_version = 0  # the highest version seen so far
        self.digest: str | None = GENESIS_HASH  # event_digest of version last_version
        self.positions = array("q")  # position of each version, 0 where none was seen
        self.suspect = False  # the chain broke somewhere: diagnose the aggregate at the end

    def record(self, version: int, position: int) -> None:
        if version > len(self.positions):
            self.positions.extend([0] * (version - len(self.positions)))
        self.positions[version - 1] = position

    def position(self, version: int) -> int | None:
        found = self.positions[version - 1] if 0 < version <= len(self.positions) else 0
        return found or None


def verify_log(
    app: PromptRecord,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check every stored event of `app`'s log; `progress(events_checked)` after each batch."""
    report = VerifyReport()
    findings: list[_Finding] = []
    trails: dict[UUID, _Trail] = {}
    position = 0
    while True:
        rows = app.recorder.select_notifications(
            start=position, limit=batch_size, inclusive_of_start=False
        )
        for row in rows:
            if row.id != position + 1:
                findings.append(_gap(position + 1, row.id - 1))
            position = row.id
            _check_row(app, row, trails, findings)
        report.events_checked += len(rows)
        if progress is not None and rows:
            progress(report.events_checked)
        if len(rows) < batch_size:
            break
    for aggregate_id, trail in trails.items():
        if trail.suspect:
            findings.extend(_diagnose(app, aggregate_id, trail))
    report.last_position = position
    report.aggregates_checked = len(trails)
    report.problems = [_problem(finding, trails) for finding in findings]
    report.problems.sort(key=lambda p: (p.position or 0, p.version or 0))
    return report


def _check_row(
    app: PromptRecord, row: Any, trails: dict[UUID, _Trail], out: list[_Finding]
) -> None:
    aggregate_id, version = row.originator_id, row.originator_version
    trail = trails.get(aggregate_id)
    if trail is None:
        trail = trails[aggregate_id] = _Trail(_type_name(row.topic))
    if version <= trail.last_version:
        earlier = trail.last_version
        out.append(
            _Finding(
                "reordered",
                f"was recorded after version {earlier} (position {trail.position(earlier)}): "
                "an event's position must grow with its version, so rows were moved",
                aggregate_id,
                version,
                row.id,
            )
        )
        trail.suspect = True
    trail.record(version, row.id)
    try:
        event = app.mapper.to_domain_event(row)
    except Exception as error:
        out.append(_unreadable(aggregate_id, version, row.id, error))
        trail.suspect = True
        trail.last_version = max(trail.last_version, version)
        return
    if version == 1:
        trail.key = _key(trail.type_name, event)
    if not trail.suspect:
        linked = version == trail.last_version + 1 and _prev_hash(event) == trail.digest
        trail.suspect = not linked
        trail.digest = _digest(event, version) if linked else None
    trail.last_version = max(trail.last_version, version)


def _diagnose(app: PromptRecord, aggregate_id: UUID, trail: _Trail) -> Iterator[_Finding]:
    """Rebuild a broken chain from its links and name what was deleted, moved or edited."""
    events: dict[int, Any] = {}
    unreadable: set[int] = set()
    for stored in app.recorder.select_events(aggregate_id, lte=trail.last_version):
        try:
            events[stored.originator_version] = app.mapper.to_domain_event(stored)
        except Exception:  # already reported by the single pass, with its position
            unreadable.add(stored.originator_version)
    present = set(events) | unreadable
    for first, last in _missing(present, trail.last_version):
        detail = "missing from the log: deleted (versions run 1..N without holes)"
        yield _Finding("deleted", detail, aggregate_id, first, through=last)
    # Which stored versions name each digest as their predecessor.
    named_by: dict[str, list[int]] = {}
    for version in sorted(events):
        link = _prev_hash(events[version])
        if link is not None:
            named_by.setdefault(link, []).append(version)
    walked: set[int] = set()
    digest: str | None = GENESIS_HASH  # the digest the next event must name
    expected, last = 1, 0  # the version the next event was written at; the last one walked
    restarted_at: int | None = None  # the event a new segment began with, until the next one
    pending: _Finding | None = None  # the last edit found, held to merge with the next one
    while len(walked) < len(events):
        picked = _pick(named_by.get(digest, []) if digest is not None else [], walked, expected)
        if picked is None:
            # Nothing names the digest we hold: the event that should come next was deleted,
            # is unreadable, or the last one walked (or its successor's link) was edited.
            if expected in present and expected not in unreadable:
                found = _edited(aggregate_id, trail, last, expected)
                if (
                    pending is not None
                    and restarted_at == last
                    and last - (pending.version or 0) <= 1
                ):
                    # Breaks on both sides of one event: its link was rewritten, which changed
                    # its own digest too. One edit, not two.
                    found = pending if pending.version == last else _relinked(found)
                elif pending is not None:
                    yield pending
                pending = found
            picked = expected = restarted_at = min(set(events) - walked)
        else:
            restarted_at = None
            if picked != expected:
                yield _Finding(
                    "reordered",
                    f"holds the event written as version {expected}: stored events were swapped",
                    aggregate_id,
                    picked,
                    trail.position(picked),
                )
        walked.add(picked)
        digest, last = _digest(events[picked], expected), picked
        expected += 1
    if pending is not None:
        yield pending


def _edited(aggregate_id: UUID, trail: _Trail, last: int, expected: int) -> _Finding:
    if last:
        detail = "its digest is not the one the next version recorded for it"
    else:
        last, detail = expected, "it no longer starts the chain (its prev_hash is not empty)"
    return _Finding(
        "edited",
        f"was changed after it was written: {detail}",
        aggregate_id,
        last,
        trail.position(last),
    )


def _relinked(found: _Finding) -> _Finding:
    # A rewritten link and two neighbouring edits leave the same marks; name both readings.
    version = found.version or 1
    detail = (
        f"was changed after it was written: it no longer links to version {version - 1}, and "
        f"the next version no longer links to it (or versions {version - 1} and {version} "
        "were both changed)"
    )
    return _Finding("edited", detail, found.aggregate_id, version, found.position)


def _pick(candidates: list[int], walked: set[int], expected: int) -> int | None:
    """The stored version that continues the chain; the one in place when there are several."""
    free = [version for version in candidates if version not in walked]
    if not free:
        return None
    return expected if expected in free else free[0]


def _missing(present: set[int], last: int) -> Iterator[tuple[int, int]]:
    start: int | None = None
    for version in range(1, last + 2):
        if version not in present and version <= last:
            start = version if start is None else start
        elif start is not None:
            yield start, version - 1
            start = None


def _digest(event: Any, version: int) -> str | None:
    """`event_digest` of `event` as if stored at `version`; None when it cannot be hashed."""
    if getattr(event, "originator_version", None) != version:
        clone = object.__new__(type(event))
        object.__setattr__(clone, "__dict__", {**vars(event), "originator_version": version})
        event = clone
    try:
        return event_digest(event)
    except (TypeError, ValueError):  # an edited field holding what JSON cannot encode
        return None


def _prev_hash(event: Any) -> str | None:
    value = getattr(event, "prev_hash", None)
    return value if isinstance(value, str) else None


def _type_name(topic: str) -> str:
    # "promptrecord.domain.prompt:Prompt.VersionCommitted" -> "Prompt"
    return topic.rpartition(":")[2].rpartition(".")[0] or topic


def _key(type_name: str, created: Any) -> tuple[str, ...] | None:
    fields = _KEY_FIELDS.get(type_name)
    if fields is None:
        return None
    values = [getattr(created, name, None) for name in fields]
    return tuple(values) if all(isinstance(v, str) for v in values) else None  # type: ignore[arg-type]


def _gap(first: int, last: int) -> _Finding:
    which = f"position {first} is" if first == last else f"positions {first} to {last} are"
    return _Finding(
        "gap",
        f"{which} missing from the log: the events stored there were deleted "
        "(promptrecord writes positions without holes)",
        position=first,
    )


def _unreadable(aggregate_id: UUID, version: int, position: int, error: Exception) -> _Finding:
    reason = error.__cause__ or error
    return _Finding(
        "unreadable",
        f"cannot be read ({type(reason).__name__}: {reason}): its stored data was changed "
        "or corrupted",
        aggregate_id,
        version,
        position,
    )


def _problem(finding: _Finding, trails: dict[UUID, _Trail]) -> Problem:
    if finding.aggregate_id is None:
        return Problem(finding.kind, _sentence(finding.detail), position=finding.position)
    trail = trails[finding.aggregate_id]
    subject = describe(trail.type_name, trail.key, finding.aggregate_id)
    if finding.through is not None and finding.through != finding.version:
        message = f"versions {finding.version} to {finding.through} of {subject} are"
    elif finding.kind == "deleted":
        message = f"version {finding.version} of {subject} is"
    else:
        message = f"version {finding.version} of {subject}"
        if finding.position is not None:
            message += f", at position {finding.position},"
    return Problem(
        finding.kind,
        _sentence(f"{message} {finding.detail}"),
        finding.aggregate_id,
        trail.type_name,
        trail.key,
        finding.version,
        finding.position,
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
