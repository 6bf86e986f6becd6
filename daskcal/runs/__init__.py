"""Runs: what is done (records, plan), one writer per rerun (lock), the run driver."""
