"""Check statuses and the one rule that turns a verdict into an exit code."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from pipeline_check.core.errors import ExitCode


class Status(IntEnum):
    """A check's outcome, ordered by severity: a run's verdict is the worst of its checks.

    ``NOT_APPLICABLE``: this configuration cannot observe the check (e.g. ordering when the validator
    itself produced the order). ``INCONCLUSIVE``: it could, but observed too little to judge (too few
    samples, the validator's own injection fell behind, nothing was compared). Neither is a pass.
    """

    PASSED = 0
    NOT_APPLICABLE = 1
    INCONCLUSIVE = 2
    FAILED = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


def verdict_of(statuses: list[Status]) -> Status:
    """The worst status, where checks this configuration cannot observe do not count against a pass;
    a run where no check passed is inconclusive (nothing was proven)."""
    if not any(s == Status.PASSED for s in statuses):
        return max([Status.INCONCLUSIVE, *statuses])
    worst = max(statuses)
    return Status.PASSED if worst == Status.NOT_APPLICABLE else worst


def exit_code(statuses: Sequence[Status], *, allow_inconclusive: bool = False) -> ExitCode:
    """Gates are fail-closed: passed (with not-applicable checks) exits 0, a breach exits 1, and so does
    an inconclusive verdict unless the caller allows it; even then a run in which no check passed exits 1
    (nothing was proven)."""
    verdict = verdict_of(list(statuses))
    if verdict <= Status.NOT_APPLICABLE:
        return ExitCode.OK
    if verdict == Status.INCONCLUSIVE and allow_inconclusive and Status.PASSED in statuses:
        return ExitCode.OK
    return ExitCode.VERDICT_FAILED
