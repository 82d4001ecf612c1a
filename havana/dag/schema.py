"""The config schema's typed sections, generated from the dataclasses that read them: one truth per setting.

Every config section the library reads through a dataclass (extractors, heads.train, heads.rows, evaluation, summary,
datasets.*.synth, figures.*) is documented in workflow/schemas/config.schema.yaml by the node `section_schema` makes of
that dataclass: every field with its JSON type, its default, its range (the class's LIMITS) and its description (the
field's inline comment in the source). tests/test_layout.py checks the file's nodes equal the generated ones, so a
field added, removed or re-documented in a dataclass without `python -m havana.dag.schema` (which rewrites those nodes
in place) fails the suite. The rest of the schema (paths, seeds, tables) is written by hand.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import keyword
import sys
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from havana.config import Limit
from havana.data.synthetic import SynthConfig
from havana.evaluation.rank import EvaluationConfig
from havana.models.extractor_config import ExtractorConfig
from havana.models.head import HeadTrainConfig, RowConfig
from havana.report import figures
from havana.report.model import SummaryConfig
from havana.utils.provenance import to_plain

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}


def sections() -> dict[tuple[str, ...], type]:
    """Key path of each generated node in the schema (from `properties`, `*` for additionalProperties) -> dataclass."""
    found: dict[tuple[str, ...], type] = {
        ("extractors", "*"): ExtractorConfig,
        ("heads", "train"): HeadTrainConfig,
        ("heads", "rows", "*"): RowConfig,
        ("evaluation",): EvaluationConfig,
        ("summary",): SummaryConfig,
        ("datasets", "*", "synth"): SynthConfig,
    }
    found |= {("figures", name): figure.settings for name, figure in figures.FIGURES.items()}
    return found


def config_key(field_name: str) -> str:
    """The YAML key of a dataclass field: the field's name, less the trailing underscore of a Python keyword
    (`import_` reads the key `import`, as havana.models.extractor_config does)."""
    stripped = field_name.removesuffix("_")
    return stripped if field_name.endswith("_") and keyword.iskeyword(stripped) else field_name


def field_comments(cls: type) -> dict[str, str]:
    """Each field's inline comment (`name: type = default  # comment`, plus comment lines right below it)."""
    source = inspect.getsource(cls)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text, line = [comments.get(node.end_lineno, "")], node.end_lineno + 1
            while line in comments and lines[line - 1].lstrip().startswith("#"):
                text.append(comments[line])
                line += 1
            found[node.target.id] = " ".join(part for part in text if part)
    return found


def type_schema(annotation: Any, cls: type) -> dict[str, Any]:
    """The JSON-schema type of one annotation (Optional -> null allowed; tuples and lists -> arrays; dataclasses ->
    their own section)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        node = type_schema(inner[0], cls)
        if "type" in node:
            node["type"] = [node["type"], "null"]
        return node
    if origin in (tuple, list):
        items = [arg for arg in args if arg is not Ellipsis]
        return {"type": "array", "items": type_schema(items[0], cls)} if items else {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    if dataclasses.is_dataclass(annotation):
        return section_schema(annotation)
    return {"type": JSON_TYPES[annotation]}


def limit_schema(limit: Limit) -> dict[str, float]:
    """A Limit as JSON-schema bounds."""
    node: dict[str, float] = {}
    if limit.low is not None:
        node["exclusiveMinimum" if limit.low_open else "minimum"] = limit.low
    if limit.high is not None:
        node["exclusiveMaximum" if limit.high_open else "maximum"] = limit.high
    return node


def section_schema(cls: type) -> dict[str, Any]:
    """The schema node of one dataclass section: an object whose unknown keys are refused, every field documented.

    An optional sub-section (a `Sub | None = None` field, e.g. an extractor's `import`) gets no `default`: Snakemake's
    validator would write `null` into every entry and then fill the sub-section's own defaults into that null."""
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    comments = field_comments(cls)
    limits = getattr(cls, "LIMITS", {})
    properties, required = {}, []
    for field in dataclasses.fields(cls):
        node = type_schema(hints[field.name], cls)
        bounds = limit_schema(limits[field.name]) if field.name in limits else {}
        if bounds and node.get("type") == "array":
            node["items"] |= bounds
        else:
            node |= bounds
        node["description"] = comments.get(field.name) or field.name.replace("_", " ")
        if field.default is not dataclasses.MISSING:
            if not (field.default is None and "properties" in node):
                node["default"] = to_plain(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
            node["default"] = {} if dataclasses.is_dataclass(default) else to_plain(default)
        else:
            required.append(config_key(field.name))
        properties[config_key(field.name)] = node
    doc = (inspect.getdoc(cls) or cls.__name__).split("\n\n")[0].replace("\n", " ")
    section = {"type": "object", "description": doc, "additionalProperties": False, "properties": properties}
    return section | ({"required": required} if required else {})


def node_at(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The schema node at a key path (`*` = additionalProperties)."""
    node = schema
    for key in path:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return node


OWNED = ("type", "description", "default", "properties", "additionalProperties", "required", "items")


def merged(old: Any, fresh: dict[str, Any]) -> dict[str, Any]:
    """`fresh` (generated) keeping what the hand-written `old` node adds that the generator does not own: bounds,
    enums and patterns of settings whose dataclass checks them elsewhere (tested against those checks)."""
    if not isinstance(old, dict):
        return fresh
    result = {key: value for key, value in old.items() if key not in OWNED} | fresh
    for key in ("properties",):
        if isinstance(fresh.get(key), dict) and isinstance(old.get(key), dict):
            result[key] = {name: merged(old[key].get(name), node) for name, node in fresh[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(fresh.get(key), dict) and isinstance(old.get(key), dict):
            result[key] = merged(old[key], fresh[key])
    return result


def owned(node: Any) -> Any:
    """The parts of a schema node the generator writes (for the test's comparison)."""
    if not isinstance(node, dict):
        return node
    return {
        key: owned(value) if key != "properties" else {n: owned(v) for n, v in value.items()}
        for key, value in node.items()
        if key in OWNED
    }


def rewrite(path: Path = SCHEMA) -> None:
    """Replace the generated nodes of the schema file with fresh ones (keeping hand-written bounds and enums)."""
    schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    for keys, cls in sections().items():
        parent = node_at(schema, keys[:-1])
        slot = "additionalProperties" if keys[-1] == "*" else None
        old = parent[slot] if slot else parent["properties"][keys[-1]]
        fresh = merged(old, section_schema(cls))
        if "default" in old:
            fresh["default"] = old["default"]
        if slot:
            parent[slot] = fresh
        else:
            parent["properties"][keys[-1]] = fresh
    path.write_text(yaml.safe_dump(schema, sort_keys=False, allow_unicode=True, width=116), encoding="utf-8")


if __name__ == "__main__":
    rewrite()
