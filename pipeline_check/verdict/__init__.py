"""What a run is judged on and what it reports: the threshold grammar and evaluation, statuses, detection
power, the run's summary and measurements, passive and contract figures, events."""
