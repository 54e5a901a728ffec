"""Run modes side by side: the plan, the driver, injected, gated and passive runs, the contract check, the
watch."""
