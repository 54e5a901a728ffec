"""``pipeline-check cleanup``: the configured stage canaries are deleted from, by the capability registry."""

from __future__ import annotations

from pipeline_check.backends.capabilities import STAGE_TYPES
from pipeline_check.backends.cleanup import Cleanup
from pipeline_check.config import PipelineConfig
from pipeline_check.core.errors import ConfigError


def stage_cleanup(config: PipelineConfig) -> Cleanup:
    """The cleanup of the first configured stage whose type offers one; ``ConfigError`` when none does."""
    for section in config.stages:
        cleanup = STAGE_TYPES.cleanup(section.type)
        if cleanup is not None:
            return cleanup(section.settings, f"stages.{section.name}")
    systems = [c.system for name in STAGE_TYPES.names() if (c := STAGE_TYPES.cleanup(name)) is not None]
    raise ConfigError(
        "stages",
        [s.name for s in config.stages],
        f"has no {' or '.join(systems)} stage",
        f"cleanup deletes canaries from {' or '.join(f'an {s} table' for s in systems)}",
    )
