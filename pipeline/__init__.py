"""The one pipeline above the domain apps: a batch of events, and the time-driven passes, run
metrics → alerts in one transaction, then one ordered after-commit list (pipeline/effects.py)."""
