"""``ai-gateway import``: a gateway config from Envoy AI Gateway's resources.

Reads ``AIGatewayRoute``, ``AIServiceBackend``, ``BackendSecurityPolicy``, Envoy Gateway
``Backend`` and ``BackendTLSPolicy`` documents (extproc.eaig_resources) and writes our config.
Credentials become ``${VAR}`` references named after the Kubernetes Secret that holds them (the
Secret's name goes in a comment); a Secret document given as input is never read. Whatever has
no equivalent here is listed, by resource and field path, in :attr:`Report.lost`.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from extproc import eaig_resources as r
from extproc.config import WILDCARD_MODEL, ConfigError, parse_config
from extproc.eaig_backends import Backends, Doc, Report

MODEL_HEADER = "x-ai-eg-model"
_GROUPS = {
    "AIGatewayRoute": "aigateway.envoyproxy.io/",
    "AIServiceBackend": "aigateway.envoyproxy.io/",
    "BackendSecurityPolicy": "aigateway.envoyproxy.io/",
    "Backend": "gateway.envoyproxy.io/",
    "BackendTLSPolicy": "gateway.networking.k8s.io/",
}
# Token counts Envoy AI Gateway can put in its metadata, and the key ours records each under.
_RECORDED = {
    "InputToken": "input_tokens",
    "CachedInputToken": "cached_input_tokens",
    "OutputToken": "output_tokens",
    "ReasoningToken": "reasoning_tokens",
    "TotalToken": "total_tokens",
}
_DURATION_PART = re.compile(r"(\d+)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def read_documents(sources: Iterable[tuple[str, str]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, document) of every mapping in each (name, YAML text); ``List`` unpacked."""
    for name, text in sources:
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: invalid YAML: {exc}") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ConfigError(f"{name}: document {i + 1}: not a Kubernetes resource")
            where = f"{name}: document {i + 1}"
            if doc.get("kind") != "List":
                yield where, doc
                continue
            for j, item in enumerate(doc.get("items") or []):
                if not isinstance(item, dict):
                    raise ConfigError(f"{where}: items[{j}]: not a Kubernetes resource")
                yield f"{where} items[{j}]", item


def _parse(where: str, doc: dict[str, Any], report: Report) -> Doc | None:
    try:
        res = r.Resource.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_errors(exc, '')}") from None
    if res.kind == "Secret":
        report.notes.append(f"{res.ref}: not read; the config names it where its value is needed")
        return None
    spec_type = r.SPECS.get(res.kind)
    if spec_type is None or not res.api_version.startswith(_GROUPS[res.kind]):
        report.lose(res, "kind", f"{res.api_version} {res.kind} has no equivalent: not imported")
        return None
    try:
        spec = spec_type.model_validate(doc.get("spec") or {})
    except ValidationError as exc:
        raise ConfigError(f"{where}: {res.ref}: {_errors(exc, 'spec')}") from None
    for path in r.unknown_fields(spec, "spec"):
        report.lose(res, path, "no equivalent field")
    return Doc(res, spec)


def _errors(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        parts.append(f"{prefix}{loc}".lstrip(".") + f": {err['msg']}")
    return "; ".join(parts)


class Importer(Backends):
    """Models from AIGatewayRoute rules, on the backends :class:`Backends` builds."""

    def __init__(self, docs: list[Doc], report: Report) -> None:
        super().__init__(docs, report)
        self.copies: dict[str, list[str]] = {}  # backend -> its names, copies included

    def run(self) -> dict[str, Any]:
        self.build()
        models: dict[str, dict[str, Any]] = {}
        for route in self.docs["AIGatewayRoute"].values():
            self._route(route, models)
        return {"backends": self.backends, "models": list(models.values())}

    def _route(self, route: Doc, models: dict[str, dict[str, Any]]) -> None:
        res, spec = route.res, route.spec
        if spec.hostnames:
            self.report.lose(res, "spec.hostnames", "every host is served")
        if spec.filter_config is not None:
            self.report.lose(res, "spec.filterConfig", "the sidecar is configured here")
        self._costs(route)
        for i, rule in enumerate(spec.rules):
            names = self._model_names(res, i, rule)
            entries = self._entries(route, i, rule)
            if not entries:
                for name in names:
                    self.report.lose(res, f"spec.rules[{i}]", f"model {name!r}: no usable backend")
                continue
            body: dict[str, Any] = {"backends": entries}
            if rule.models_owned_by:
                body["owned_by"] = rule.models_owned_by
            if rule.models_created_at:
                body["created"] = int(rule.models_created_at.timestamp())
            if rule.timeouts is not None:
                self._timeouts(res, i, rule.timeouts, body)
            for name in names:
                if name in models:
                    self.report.lose(res, f"spec.rules[{i}]", f"model {name!r} is routed earlier")
                else:
                    models[name] = {"name": name, **copy.deepcopy(body)}

    def _model_names(self, res: r.Resource, i: int, rule: r.RouteRule) -> list[str]:
        if not rule.matches:
            return [WILDCARD_MODEL]
        names = []
        for j, match in enumerate(rule.matches):
            path = f"spec.rules[{i}].matches[{j}].headers"
            models = [h for h in match.headers if h.name.lower() == MODEL_HEADER]
            others = [h.name for h in match.headers if h.name.lower() != MODEL_HEADER]
            if others:
                self.report.lose(res, path, f"matches on {', '.join(others)}: not imported")
            elif not models:
                names.append(WILDCARD_MODEL)
            elif models[0].type != "Exact":
                self.report.lose(res, path, f"{models[0].type} model match: not imported")
            else:
                names.append(models[0].value)
        return list(dict.fromkeys(names))  # a name matched twice in one rule is one model

    def _entries(self, route: Doc, i: int, rule: r.RouteRule) -> list[dict[str, Any]]:
        res, entries = route.res, list[dict[str, Any]]()
        for k, ref in enumerate(rule.backend_refs):
            path = f"spec.rules[{i}].backendRefs[{k}]"
            target = (ref.namespace or res.metadata.namespace, ref.name)
            name = self.names.get(target)
            if ref.group or ref.kind:
                self.report.lose(res, path, f"a {ref.kind}: only AIServiceBackends are served")
                continue
            if name is None:
                given = target in self.docs["AIServiceBackend"]
                why = "not carried over (see above)" if given else "not among the inputs"
                self.report.lose(res, path, f"AIServiceBackend {'/'.join(target)}: {why}")
                continue
            if ref.header_mutation is not None or ref.body_mutation is not None:
                self.report.lose(res, f"{path}.headerMutation/bodyMutation", "no equivalent")
            weight = 1 if ref.weight is None else ref.weight
            if weight == 0:
                self.report.lose(res, f"{path}.weight", "weight 0: left out")
                continue
            fallback = 1 if ref.priority is None and name in self.fallback else 0
            priority = fallback if ref.priority is None else ref.priority
            if weight > 128 or priority > 127:
                self.report.lose(res, path, "weight above 128 or priority above 127: capped")
            entry: dict[str, Any] = {"backend": self._alias(name, entries)}
            if ref.model_name_override:
                entry["model"] = ref.model_name_override
            if priority:
                entry["priority"] = min(priority, 127)
            if weight != 1:
                entry["weight"] = min(weight, 128)
            entries.append(entry)
        return entries

    def _alias(self, name: str, entries: list[dict[str, Any]]) -> str:
        """The backend's name, or a copy's when the rule already lists it (twice is allowed
        there, e.g. with another modelNameOverride; ours lists each backend once)."""
        used = {e["backend"] for e in entries}
        copies = self.copies.setdefault(name, [name])
        for candidate in copies:
            if candidate not in used:
                return candidate
        n = len(copies) + 1
        while f"{name}-{n}" in self.backends:
            n += 1
        alias = f"{name}-{n}"
        copies.append(alias)
        self.backends[alias] = copy.deepcopy(self.backends[name])
        self.report.comments[alias] = [f"a copy of {name}: a rule lists it again"]
        return alias

    def _timeouts(
        self, res: r.Resource, i: int, timeouts: r.RouteTimeouts, body: dict[str, Any]
    ) -> None:
        # Gateway API: request bounds the whole exchange, backendRequest each attempt.
        wanted = {"timeout": ("request", timeouts.request)}
        wanted["per_try_timeout"] = ("backendRequest", timeouts.backend_request)
        for ours, (theirs, value) in wanted.items():
            seconds = _seconds(value) if value is not None else None
            if value is not None and seconds is None:
                where = f"spec.rules[{i}].timeouts.{theirs}"
                self.report.lose(res, where, f"{value!r}: not imported")
            elif seconds is not None and ours == "timeout":
                body["timeout"] = seconds
            elif seconds is not None:
                body["retry"] = {"per_try_timeout": seconds}

    def _costs(self, route: Doc) -> None:
        for k, cost in enumerate(route.spec.llm_request_costs):
            path = f"spec.llmRequestCosts[{k}]"
            ours = _RECORDED.get(cost.type)
            if cost.type == "CEL":
                self.report.lose(
                    route.res, f"{path}.cel", "CEL cost expressions have no equivalent"
                )
            elif ours is None:
                self.report.lose(route.res, f"{path}.type", f"{cost.type} is not counted here")
            elif ours != cost.metadata_key:
                self.report.notes.append(
                    f"{route.res.ref}: {path}: {cost.type} is recorded in metadata namespace"
                    f" io.envoy.ai_gateway as {ours!r}, not {cost.metadata_key!r}"
                )


def _seconds(value: str) -> float | None:
    """A Gateway API duration (``1h30m``, ``500ms``) in seconds; None when malformed or 0."""
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts) or None


def import_resources(sources: Iterable[tuple[str, str]]) -> tuple[dict[str, Any], Report]:
    """Our config (as data) from (file name, YAML text) pairs, and what did not carry over."""
    report = Report()
    docs = [d for where, doc in read_documents(sources) if (d := _parse(where, doc, report))]
    data = Importer(docs, report).run()
    try:
        parse_config(data, env={}, secrets=False)
    except ConfigError as exc:
        raise ConfigError(f"the imported config does not load (an importer bug):\n{exc}") from None
    return data, report


def render(data: dict[str, Any], report: Report, sources: list[str]) -> str:
    lines = [f"# Written by `ai-gateway import` from {', '.join(sources)}."]
    if report.variables:
        lines.append("# Set these environment variables from the Kubernetes Secrets named:")
        lines += [f"#   {var}: {where}" for var, where in sorted(report.variables.items())]
    lines += [f"# Not carried over: {item}" for item in report.lost]
    lines += [f"# Note: {item}" for item in report.notes]
    lines.append("backends:" + ("" if data["backends"] else " {}"))
    for name, body in data["backends"].items():
        lines += [f"  # {c}" for c in report.comments.get(name, [])]
        lines += ["  " + line for line in _dump({name: body}).splitlines()]
    lines.append(_dump({"models": data["models"]}).rstrip())
    return "\n".join(lines) + "\n"


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def run_import(files: list[str], output: str, allow_partial: bool) -> int:
    """The command: 0 when everything carried over (or --allow-partial), else 1."""
    sources = []
    for name in files:
        try:
            sources.append((name, Path(name).read_text()))
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror}") from None
    data, report = import_resources(sources)
    for item in report.notes:
        print(f"note: {item}", file=sys.stderr)
    for item in report.lost:
        print(f"not carried over: {item}", file=sys.stderr)
    if report.lost and not allow_partial:
        print(
            f"{len(report.lost)} item(s) cannot be carried over; nothing written"
            " (--allow-partial writes the rest)",
            file=sys.stderr,
        )
        return 1
    text = render(data, report, files)
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text)
    return 0
