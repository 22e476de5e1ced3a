"""What every part of the configuration model shares: the base model, durations, the error."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: object) -> object:
    """Accept ``30s``, ``100ms``, ``2m``, ``1h`` or a number of seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"invalid duration {value!r} (use e.g. 500ms, 30s, 5m, 1h)")
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]


class ConfigError(Exception):
    """A configuration problem, with the key path of every offending value."""


class ConfigModel(BaseModel):
    """A part of the config: unknown keys are errors, values never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)
