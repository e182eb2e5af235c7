"""Fuzzing dlspec's command line: every outcome must be exit 0, 1 or 2 with a located message, within a time
and memory bound. `python -m fuzz` runs it long; tests/test_fuzz.py runs a bounded, seeded slice."""
