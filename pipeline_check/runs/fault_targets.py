"""What a scenario's faults act on, worked out from the config: the stack driver, its Toxiproxy, and the
SQLite file of each stage whose type can be locked. The fault runner gets these narrow targets, never the
config."""

from __future__ import annotations

from pipeline_check.backends.capabilities import STAGE_TYPES
from pipeline_check.config import PipelineConfig
from pipeline_check.faults.runner import Services, Targets
from pipeline_check.faults.toxiproxy import Toxiproxy


def targets_of(config: PipelineConfig, stack: Services | None = None) -> Targets:
    """What ``config``'s faults act on: ``stack`` (else the stack its ``[faults]`` names), that stack's
    Toxiproxy (or ``[faults] toxiproxy``), and the SQLite catalog file of each stage that has one."""
    from pipeline_check.stack.local import LocalStack

    owned = config.faults
    url = owned.toxiproxy
    if owned.stack is not None:
        local = LocalStack.open(owned.stack, run_dir=owned.run_dir)
        stack = stack or local
        url = url or local.spec.toxiproxy
    catalogs = {}
    for section in config.stages:
        lock = STAGE_TYPES.lock(section.type)
        file = lock.file(section.settings) if lock is not None else None
        if file is not None:
            catalogs[section.name] = file
    return Targets(stack, Toxiproxy(url) if url else None, catalogs)
