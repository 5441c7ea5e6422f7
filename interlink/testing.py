"""Interlink's pytest plugin: fixtures to test a project's integrations the way Interlink tests its own.

Installed with Interlink (the `pytest11` entry point `interlink`), so a project's tests use the fixtures without
importing anything: `prefect_harness`, `interlink_home`, `run_pipeline`, `dead_letters`; and `assert_dead_letters`
is imported from `interlink.testing`. None is autouse; Prefect, Great Expectations and pandas load only when a
fixture that needs them runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pandas as pd

    from interlink.data_checks.policy import Policy
    from interlink.flows.pipeline import Pipeline

__all__ = ["DeadLetter", "PipelineRun", "assert_dead_letters"]


@dataclass(frozen=True)
class DeadLetter:
    """A record the pipeline refused: its key (as the dead-letter store keeps it, text), the stage, and why."""

    key: str
    stage: str
    reason: str


@dataclass(frozen=True)
class PipelineRun:
    """What one batch would become in a real sync: the rows the target would be given (indexed by the position of
    the raw record each came from), and the dead letters.

    `rows_read` counts the raw records, `rows_superseded` those the transform merged into a newer one of the same
    key; `notes` are the warnings a run would ledger (a source schema that evolved from its contract, stale data).
    """

    delivered: pd.DataFrame
    dead_letters: list[DeadLetter]
    rows_read: int = 0
    rows_superseded: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def stages(self) -> dict[str, int]:
        """How many records were dead-lettered at each stage (`ingest`, `transform`, `enrich`, `check`, `deliver`)."""
        counts: dict[str, int] = {}
        for letter in self.dead_letters:
            counts[letter.stage] = counts.get(letter.stage, 0) + 1
        return counts


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API (and its own database) for the test session, so flows run without touching a real server.

    `run_pipeline` uses it; a test that runs a sync (`PIPELINE.sync()`, `interlink.cli.main(["run", name])`) asks
    for it too."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def interlink_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh Interlink home for the test (`INTERLINK_HOME`, with `INTERLINK_STATE_URL` unset): the run ledger and
    the dead-letter store are a new SQLite file in it. Returns its path."""
    home = tmp_path / "interlink-home"
    home.mkdir()
    monkeypatch.setenv("INTERLINK_HOME", str(home))
    monkeypatch.delenv("INTERLINK_STATE_URL", raising=False)
    return home


@pytest.fixture
def run_pipeline(prefect_harness: None, interlink_home: Path) -> Callable[..., PipelineRun]:
    """`run_pipeline(pipeline, frame, *, policy="quarantine") -> PipelineRun`: one batch of raw source records
    through `pipeline` as its sync would take it, stopping before the target is written.

    `frame` holds the records as the source gives them (one row each, the source's field names). The batch goes
    through the pipeline's own steps, in a Prefect flow run of its own: the schema contract and freshness guards,
    ingest, the transform, the enrichers (against the systems configured, as in a real run), the expectation suite
    and the gate under `policy`, and the target's limits. Every record refused is dead-lettered in the test's
    Interlink home, as a sync would, and listed in `.dead_letters`; `.delivered` holds the rows the target would be
    given. A gate that stops the batch raises as in a run (`GateFailed` under `fail`, a batch-level failure, or a
    contract under `freeze`); under `approve`, a batch that needs a person's approval is rejected at once
    (`GateRejected`), as no one answers in a test. The volume guard, which judges whole runs, is not applied.
    """

    def run(pipeline: Pipeline, frame: pd.DataFrame, *, policy: Policy = "quarantine") -> PipelineRun:
        return _run_batch(pipeline, frame, policy)

    return run


@pytest.fixture
def dead_letters(interlink_home: Path) -> Callable[[str], list[DeadLetter]]:
    """`dead_letters(integration) -> list[DeadLetter]`: the open dead letters of `integration` in the test's Interlink
    home, oldest first; for a test that ran a real sync (`PIPELINE.sync()` or `interlink.cli.main(["run", name])`)."""

    def read(integration: str) -> list[DeadLetter]:
        from interlink.settings import Settings

        return _open_letters(Settings.load().state_db, integration)

    return read


def assert_dead_letters(found: PipelineRun | Iterable[DeadLetter], expected: dict[Any, str]) -> None:
    """Assert that the dead letters `found` (a `PipelineRun` or a list of `DeadLetter`) are exactly the keys of
    `expected` (compared as text: `7` matches key `"7"`), each with a reason containing `expected[key]`, case ignored."""
    letters = found.dead_letters if isinstance(found, PipelineRun) else list(found)
    by_key = {letter.key: letter for letter in letters}
    wanted = {str(key): text for key, text in expected.items()}
    problems = [f"missing: {key!r}" for key in wanted if key not in by_key]
    problems += [f"unexpected: {key!r}" for key in by_key if key not in wanted]
    problems += [
        f"{key!r}: reason does not contain {text!r}"
        for key, text in wanted.items()
        if key in by_key and text.lower() not in by_key[key].reason.lower()
    ]
    if problems:
        listed = "\n".join(f"  {letter.key!r} [{letter.stage}] {letter.reason}" for letter in letters) or "  (none)"
        raise AssertionError("dead letters differ: " + "; ".join(problems) + f"\ndead letters found:\n{listed}")


def _run_batch(pipeline: Pipeline, frame: pd.DataFrame, policy: Policy) -> PipelineRun:
    """One batch through `prepare_batch` (and `guard_batch`) in a flow run; its dead letters read back by that run's id."""
    from dataclasses import replace

    from prefect import flow
    from prefect.runtime import flow_run

    from interlink.flows.pipeline import guard_batch, prepare_batch
    from interlink.ledger import Entry
    from interlink.settings import Settings
    from interlink.tasks.ingest import Chunk

    timeout = {"approval_timeout_s": 0} if policy == "approve" else {}
    gated = replace(pipeline, gate=replace(pipeline.gate, policy=policy, **timeout))
    raw = frame.reset_index(drop=True)

    @flow(name=f"{pipeline.name}-test-batch", persist_result=False)
    def batch() -> tuple:
        settings = Settings.load()
        entry = Entry()
        guard_batch(gated, settings, Chunk(records=raw, last=False), entry)
        prepared = prepare_batch(gated, settings, raw, [{} for _ in pipeline.enrichers], entry)
        return prepared, entry, settings.state_db, flow_run.id

    prepared, entry, state_db, run_id = batch()
    return PipelineRun(
        delivered=prepared.rows,
        dead_letters=_open_letters(state_db, pipeline.name, run_id),
        rows_read=prepared.counts.rows_read,
        rows_superseded=prepared.counts.rows_superseded,
        notes=list(entry.notes),
    )


def _open_letters(state_db: str, integration: str, flow_run_id: str | None = None) -> list[DeadLetter]:
    """The open dead letters of `integration` (those flow run `flow_run_id` wrote, if given)."""
    from interlink.deadletter import OPEN, DeadLetters

    return [
        DeadLetter(key=e["record_key"], stage=e["stage"], reason=e["reason"])
        for e in DeadLetters(state_db).entries(integration, OPEN)
        if flow_run_id is None or e["flow_run_id"] == flow_run_id
    ]
