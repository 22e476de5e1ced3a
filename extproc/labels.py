"""Bounded telemetry label values: a client must not be able to grow the metrics without end.

Two kinds of label values come from clients: the model name on a ``"*"`` route (and whatever
model name the provider echoes back), and the values of the ``telemetry.header_attributes``
headers. Every distinct value is a new time series in every worker, kept in the Prometheus
files until the gateway stops, so each is bounded here (see the README, Telemetry):

- model names in the config always pass; others are cut to ``max_value_length`` characters and
  pass while fewer than ``max_models`` distinct ones were seen, then become ``other``;
- header values are cut to ``max_value_length`` characters; a header with an allow-list
  (``header_values``) keeps only those values; any other header keeps the first
  ``max_header_values`` distinct values, then ``other``;
- the combinations: values bounded one by one still multiply (100 model names times 100
  tenants), so at most ``max_label_sets`` distinct label sets may hold a client-controlled
  value; past that, a new set has each of those values replaced by ``other``.

The sets of values seen are shared by the workers of one gateway through small files beside the
Prometheus files: a worker restarted after a crash carries on from the set its predecessor
filled (whose series are still being served) instead of adding as many again.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import orjson

from extproc.config import TelemetryConfig

OTHER = "other"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
LABEL_SET = "label_set"  # the dropped-labels attribute of a whole label set over the cap

# Why a value was replaced: what the dropped-labels metric counts, by attribute.
CAPPED = "cap"  # the attribute already has as many distinct values as it may
NOT_ALLOWED = "not_allowed"  # the value is not in the header's allow-list
TRUNCATED = "truncated"  # the value was cut to max_value_length

OnDrop = Callable[[str, str], None]  # (attribute, reason)


class ValueSet:
    """At most ``limit`` distinct values, in a file shared by processes if ``path`` is given.

    The file holds one JSON string per line and only grows; a process reads the lines others
    appended whenever it meets a value it does not know, under an exclusive lock. Once the set
    is full every further lookup is in memory: a full set never changes again.
    """

    def __init__(self, limit: int, path: Path | None = None) -> None:
        self._limit = limit
        self._path = path
        self._known: set[str] = set()
        self._offset = 0  # how much of the file is in _known
        self._full = limit == 0

    def admit(self, value: str) -> bool:
        if value in self._known:
            return True
        if self._full:
            return False
        if self._path is None:
            return self._add(value)
        with open(self._path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            f.seek(self._offset)
            for line in f.read().splitlines():
                self._known.add(orjson.loads(line))
            if value in self._known:
                self._offset = f.tell()
                return True
            if not self._add(value):
                return False
            f.write(orjson.dumps(value) + b"\n")
            f.flush()
            self._offset = f.tell()
            return True

    def _add(self, value: str) -> bool:
        if len(self._known) >= self._limit:
            self._full = True
            return False
        self._known.add(value)
        return True


class LabelBounds:
    """The bounds of one worker; ``on_drop`` hears of every value replaced or cut."""

    def __init__(
        self,
        config: TelemetryConfig,
        configured_models: Iterable[str],
        on_drop: OnDrop,
        directory: Path | None = None,
    ) -> None:
        self._configured = frozenset(configured_models)
        self._on_drop = on_drop
        self._length = config.max_value_length

        def shared(attribute: str, limit: int) -> ValueSet:
            path = directory / f"labels-{attribute}.jsonl" if directory is not None else None
            return ValueSet(limit, path)

        self._models = {
            attr: shared(attr, config.max_models) for attr in (REQUEST_MODEL, RESPONSE_MODEL)
        }
        attributes = config.header_attributes
        self._allowed = {
            attributes[header]: frozenset(values) for header, values in config.header_values.items()
        }
        self._values = {
            attr: shared(attr, config.max_header_values)
            for attr in set(attributes.values())
            if attr not in self._allowed
        }
        self._sets = shared(LABEL_SET, config.max_label_sets)

    def bound(
        self, operation: str, backend: str, models: tuple[str, str], extra: Mapping[str, str]
    ) -> tuple[str, str, dict[str, str]]:
        """The bounded (request model, response model, header attributes) of one record."""
        request = self.model(models[0])
        response = self.model(models[1], RESPONSE_MODEL)
        values = self.header_values(extra) if extra else {}
        if not (self._free_model(request) or self._free_model(response) or self._free(values)):
            return request, response, values
        key = orjson.dumps([operation, backend, request, response, *sorted(values.items())])
        if self._sets.admit(key.decode()):
            return request, response, values
        self._on_drop(LABEL_SET, CAPPED)
        if self._free_model(request):
            request = OTHER
        if self._free_model(response):
            response = OTHER
        return (
            request,
            response,
            {a: OTHER if a in self._values and v else v for a, v in values.items()},
        )

    def _free_model(self, name: str) -> bool:
        """A model label a client chose (a bounded one)."""
        return name != OTHER and name not in self._configured

    def _free(self, values: Mapping[str, str]) -> bool:
        return any(a in self._values and v not in ("", OTHER) for a, v in values.items())

    def model(self, name: str, attribute: str = REQUEST_MODEL) -> str:
        if name in self._configured or name == OTHER:
            return name
        name = self._cut(attribute, name)
        if self._models[attribute].admit(name):
            return name
        self._on_drop(attribute, CAPPED)
        return OTHER

    def _cut(self, attribute: str, value: str) -> str:
        if len(value) <= self._length:
            return value
        self._on_drop(attribute, TRUNCATED)
        return value[: self._length]

    def header_values(self, values: Mapping[str, str]) -> dict[str, str]:
        """Header attribute -> its bounded value (attributes not configured are left out)."""
        return {
            attr: self._header_value(attr, v)
            for attr, v in values.items()
            if attr in self._values or attr in self._allowed
        }

    def _header_value(self, attribute: str, value: str) -> str:
        allowed = self._allowed.get(attribute)
        if allowed is not None:
            if value in allowed or value in ("", OTHER):
                return value
            self._on_drop(attribute, NOT_ALLOWED)
            return OTHER
        value = self._cut(attribute, value)
        if value in ("", OTHER) or self._values[attribute].admit(value):
            return value
        self._on_drop(attribute, CAPPED)
        return OTHER
