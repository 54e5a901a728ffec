"""Production gates without injection: passive runs that sample each stage's freshness from the data
itself, API response times under concurrent load, and the contract check, reported through the same
events as an injected run. Import the modules you need; this package imports nothing on its own."""
