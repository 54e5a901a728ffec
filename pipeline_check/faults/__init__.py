"""Scenario faults: the steps a scenario declares, the runner that applies and undoes them, the Toxiproxy client."""
