"""pipeline.toml -> typed, validated settings.

``${NAME}`` and ``${NAME:-default}`` are replaced from the environment (:mod:`.environment`). The source and
each stage name their plugin (``type``); the plugin's own settings model validates the rest of its section
(:mod:`.plugins`), so every setting is checked when the file loads (:mod:`.loading`), before anything runs.
Errors are one line naming the setting, the value and the fix, with a "did you mean" hint for a misspelt
key; secrets are masked in every printed form (:mod:`.errors`). The sections are :mod:`.sections`, the
scenarios :mod:`.scenarios`, the whole file and what a scenario asks of a run :mod:`.pipeline`.
"""

from __future__ import annotations

from pipeline_check.config.loading import find_config, load_config
from pipeline_check.config.pipeline import PipelineConfig

__all__ = ["PipelineConfig", "find_config", "load_config"]
