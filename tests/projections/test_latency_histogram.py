"""Rollup percentiles within 1% of exact percentiles over the same rows, on both backends.

Executions of several distributions are stored through the real store (rollups written in
the ingest transaction); p50/p95/p99 read back from the rollups, merged across hours and
versions, are compared with numpy's exact percentiles of the same latencies.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from promptrecord.projections.executions import Execution, ExecutionStore, open_execution_store
from promptrecord.projections.executions_metrics import Figures
from promptrecord.projections.latency_histogram import (
    RELATIVE_ERROR,
    LatencyHistogram,
    bucket_of,
    bucket_value,
)
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 6, 0, tzinfo=UTC)
QUANTILES = (0.5, 0.95, 0.99)

Draw = Callable[[np.random.Generator, int], np.ndarray]


def _lognormal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.lognormal(mean=6.0, sigma=0.8, size=n)


def _bimodal(rng: np.random.Generator, n: int) -> np.ndarray:
    fast = rng.normal(120.0, 15.0, size=n)
    slow = rng.normal(2400.0, 300.0, size=n)
    return np.abs(np.where(rng.random(n) < 0.8, fast, slow))


def _uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(5.0, 5000.0, size=n)


DISTRIBUTIONS: dict[str, Draw] = {
    "lognormal": _lognormal,
    "bimodal": _bimodal,
    "uniform": _uniform,
}


def exact(latencies: np.ndarray, q: float) -> float:
    """The exact counterpart of `LatencyHistogram.quantile`: the item at floor(q (n-1))."""
    return float(np.percentile(latencies, q * 100, method="lower"))


def within(estimate: float | None, truth: float) -> bool:
    assert estimate is not None
    return abs(estimate - truth) <= RELATIVE_ERROR * truth + 1e-12


@pytest.fixture
def store(backend: Settings) -> Iterator[ExecutionStore]:
    opened = open_execution_store(backend)
    try:
        yield opened
    finally:
        opened.close()


def test_every_latency_is_reported_within_one_percent() -> None:
    for value in np.geomspace(0.01, 1e6, 5000):
        assert within(bucket_value(bucket_of(float(value))), float(value))
    assert bucket_value(bucket_of(0.0)) == 0.0


def test_empty_and_out_of_range() -> None:
    assert LatencyHistogram().quantile(0.5) is None
    with pytest.raises(ValueError, match="not in"):
        LatencyHistogram.of([1.0]).quantile(1.5)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_in_memory_quantiles_match_exact(name: str) -> None:
    rng = np.random.default_rng(7)
    latencies = DISTRIBUTIONS[name](rng, 20_000)
    histogram = LatencyHistogram.of(latencies.tolist())
    for q in QUANTILES:
        assert within(histogram.quantile(q), exact(latencies, q)), (name, q)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_rollup_percentiles_within_one_percent_of_exact(store: ExecutionStore, name: str) -> None:
    """3 versions x 5 hours of one distribution, stored in batches; every version, every
    hour and the whole merged window agree with the exact percentiles."""
    rng = np.random.default_rng(11)
    by_version: dict[int, list[float]] = {1: [], 2: [], 3: []}
    by_hour: dict[int, list[float]] = {h: [] for h in range(5)}
    batch: list[Execution] = []
    for version in by_version:
        for hour in by_hour:
            latencies = DISTRIBUTIONS[name](rng, 400).tolist()
            by_version[version] += latencies
            by_hour[hour] += latencies
            for i, latency in enumerate(latencies):
                at = START + timedelta(hours=hour, seconds=i)
                batch.append(_execution(version, at, latency))
    for chunk in range(0, len(batch), 1000):
        store.ingest(batch[chunk : chunk + 1000])
    end = int((START + timedelta(hours=5)).timestamp())
    rollups = store.rollups("acme", "bot", "production", int(START.timestamp()), end)
    assert len(rollups) == 15
    everything = np.array([x for xs in by_version.values() for x in xs])
    merged = Figures.of(rollups)
    assert merged.count == len(everything)
    for q in QUANTILES:
        assert within(merged.latency.quantile(q), exact(everything, q)), q
    for version, latencies in by_version.items():
        figures = Figures.of(r for r in rollups if r.version == version)
        for q in QUANTILES:
            assert within(figures.latency.quantile(q), exact(np.array(latencies), q))
    for hour, latencies in by_hour.items():
        key = int((START + timedelta(hours=hour)).timestamp())
        figures = Figures.of(r for r in rollups if r.hour == key)
        for q in QUANTILES:
            assert within(figures.latency.quantile(q), exact(np.array(latencies), q))


def _execution(version: int, at: datetime, latency: float) -> Execution:
    return Execution(
        id=str(uuid.uuid4()),
        workspace="acme",
        prompt="bot",
        version=version,
        environment="production",
        started_at=at,
        status="ok",
        latency_ms=latency,
    )
