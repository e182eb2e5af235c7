"""The long fuzz run: `python -m fuzz [--mutations N] [--generated N] [--seed S]`, then a table of outcomes.

Every case runs in a forked child under a memory cap and a time limit (fuzz.harness); anything but a clean
exit 0/1/2 is printed with its command line and stderr."""
from __future__ import annotations

import argparse

from hypothesis import HealthCheck, given, settings

from . import cases
from .harness import KINDS, Runner, tally


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz")
    p.add_argument("--mutations", type=int, default=6000, help="mutated example specs (default 6000)")
    p.add_argument("--generated", type=int, default=1000, help="hypothesis cases per strategy (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    runner = Runner()
    groups: dict[str, list] = {}

    def record(group: str, case) -> None:
        outcome = runner.run(case)
        groups.setdefault(group, []).append(outcome)
        if outcome.kind != "clean":
            print(outcome.describe(), flush=True)

    for case in cases.fixed_cases():
        record("resource bombs and CLI misuse", case)
    for case in cases.mutated_specs(args.mutations, args.seed):
        record(f"mutated specs ({case.argv[0]})", case)
    budget = settings(max_examples=args.generated, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
    for group, strategy, make in (("generated specs and expressions", cases.generated_specs, cases.spec_case),
                                  ("overrides", cases.overrides, cases.override_case),
                                  ("checkpoint dicts", cases.checkpoints, lambda case: case)):
        budget(given(strategy)(_recorder(record, group, make)))()
    runner.close()
    print(f"\n{'group':<40} " + " ".join(f"{k:>9}" for k in ("cases",) + KINDS))
    total = []
    for group, outcomes in groups.items():
        total += outcomes
        counts = tally(outcomes)
        print(f"{group:<40} " + " ".join(f"{counts[k]:>9}" for k in ("cases",) + KINDS))
    counts = tally(total)
    print(f"{'all':<40} " + " ".join(f"{counts[k]:>9}" for k in ("cases",) + KINDS))
    return 0 if counts["clean"] == counts["cases"] else 1


def _recorder(record, group: str, make):
    def run(value) -> None:  # @given refuses a function with default arguments
        record(group, make(value))
    return run


if __name__ == "__main__":
    raise SystemExit(main())
