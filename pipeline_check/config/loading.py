"""Finding and reading pipeline.toml: the file, the environment substituted, every section validated."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline_check.config.environment import substitute_tree
from pipeline_check.config.errors import config_error
from pipeline_check.config.pipeline import PipelineConfig
from pipeline_check.core.errors import ConfigError

DEFAULT = Path("pipeline.toml")
EXAMPLE = "example.toml"  # package data beside this module


def find_config(path: Path | None = None) -> Path:
    """``path``, else ``$PIPELINE_CHECK_CONFIG``, else ``./pipeline.toml``."""
    if path is not None:
        return path
    if "PIPELINE_CHECK_CONFIG" in os.environ:
        return Path(os.environ["PIPELINE_CHECK_CONFIG"])
    if DEFAULT.exists():
        return DEFAULT
    raise ConfigError(
        "--config",
        None,
        "no pipeline.toml here and $PIPELINE_CHECK_CONFIG is not set",
        "pass -c path/to/pipeline.toml, or start one: pipeline-check example-config > pipeline.toml",
    )


def example_config() -> str:
    """A complete, commented pipeline.toml (package data): what ``pipeline-check example-config`` prints."""
    return resources.files("pipeline_check.config").joinpath(EXAMPLE).read_text(encoding="utf-8")


def read_toml(path: Path, setting: str, fix: str) -> dict[str, Any]:
    """A TOML file as data, every way it can be unreadable turned into one ``ConfigError``."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(setting, str(path), "does not exist", fix) from None
    except IsADirectoryError:
        raise ConfigError(setting, str(path), "is a directory", fix) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            setting, str(path), f"is not UTF-8 text ({exc.reason} at byte {exc.start})", "save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(setting, str(path), f"cannot be read ({exc.strerror or exc})", fix) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(setting, str(path), f"is not valid TOML ({exc})", "fix the syntax") from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read, substitute and validate ``path``."""
    env = os.environ if env is None else env
    raw = read_toml(path, "--config", "pass -c path/to/pipeline.toml")
    data = substitute_tree(raw, env, "")
    try:
        return PipelineConfig.model_validate(data, context={"file": path.name, "folder": path.resolve().parent})
    except ValidationError as exc:
        raise config_error(exc, path.name, root=PipelineConfig) from None
