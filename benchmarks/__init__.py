"""Benchmarks of pipeline-check: ``python -m benchmarks`` (``make bench``); see BENCHMARKS.md."""
