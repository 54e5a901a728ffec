"""Foundations every layer may use: the error tree, secret redaction, atomic writes, durations, the run's
clock, polling with deadlines, JSON paths, the plugin registry base."""
