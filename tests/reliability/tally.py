"""What the reliability scenarios did, totalled for the summary printed at the end of the run."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from avatars.invariants import find_invariant_problems


@dataclass
class Tally:
    """Totals across scenarios: one line at the end says how hard the run pushed."""

    scenarios: int = 0
    generations: int = 0
    kills: int = 0
    redeliveries: int = 0
    refunds: int = 0
    invariant_checks: int = 0
    figures: list[str] = field(default_factory=list)

    def totals(self) -> str:
        return (
            f"{self.scenarios} scenarios, {self.generations} generations, {self.kills} kills, "
            f"{self.redeliveries} redeliveries seen, {self.refunds} refunds, "
            f"{self.invariant_checks} invariant checks passed"
        )


TALLY = Tally()


def assert_invariants() -> None:
    """Every scenario ends here: the promises of `manage.py check_invariants` all hold."""
    problems = find_invariant_problems()
    assert problems == [], problems
    TALLY.invariant_checks += 1


RECEIVED = re.compile(r"avatar_task\[([0-9a-f-]+)\] received")


def record_redeliveries(outputs: Iterable[list[str]]) -> int:
    """Messages that workers (these output logs) received again after a first delivery."""
    receipts = Counter(
        match.group(1) for output in outputs for line in output if (match := RECEIVED.search(line))
    )
    redelivered = sum(times - 1 for times in receipts.values())
    TALLY.redeliveries += redelivered
    return redelivered


SWEPT = re.compile(r"sweeper: \{'redriven': (\d+)")


def count_redrives(output: list[str]) -> int:
    """Steps the sweeper re-drove, by a worker's log."""
    return sum(int(match.group(1)) for line in output if (match := SWEPT.search(line)))
