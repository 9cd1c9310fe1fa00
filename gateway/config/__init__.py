"""Configuration: YAML with line marks, typed models, meaning checks."""

from gateway.config.load import LoadedConfig, load_config
from gateway.config.source import ConfigError, Problem

__all__ = ["ConfigError", "LoadedConfig", "Problem", "load_config"]
