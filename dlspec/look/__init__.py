"""Looking at specs and runs: `dlspec plot`, `runs`, `graph`, `diff` and `config`.

These commands read what the earlier stages produce (a Spec, its summary, run directories through
dlspec.train.rundir) and change nothing; no stage imports them.
"""
