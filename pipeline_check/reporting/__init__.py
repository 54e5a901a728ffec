"""Event handlers that report a run: console, JSON, JUnit XML, HTML, and the registry of file reporters
(:mod:`.registry`). No command-line code in here; reporters consume events only."""
