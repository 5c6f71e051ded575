"""The published JSON Schema (`bundle.v1.schema.json`), generated from the manifest dataclasses so the two cannot
drift: `python -m converters.bundle.schema_gen` rewrites the file, and a test fails while the committed file is not
what this module makes. Apps and the validating reader read the file, never this module.

Draft 2020-12. A dataclass is a closed object in `$defs` (its fields the properties, in order; required unless they
have a default or are written by omission); str, int, float, bool, None and Any are their JSON types, `X | None` a
nullable X, `Literal` a const or enum, `tuple[X, ...]` and `list[X]` arrays, `tuple[X, Y]` fixed-length ones,
`dict[K, V]` objects with K keys and V values. What annotations cannot say comes from the vocabulary of
`converters.bundle.schema_types`: `Annotated` keywords (a "$def" one publishes the type once under that name), a
field's metadata["schema"] and a class's `__schema__` (`EXTERNAL` for classes defined outside the bundle), merged
into what the annotation gives; types inside them become their schemas.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from converters.bundle.manifest import SCHEMA_VERSION, Manifest
from converters.bundle.schema_types import EXTERNAL

DRAFT = "https://json-schema.org/draft/2020-12/schema"
PATH = Path(__file__).with_name(f"bundle.v{SCHEMA_VERSION}.schema.json")
WIDTH = 120  # of the schema file's lines, where the JSON allows
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s keywords, nested objects merged key by key; a description goes first, for readers."""
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(out.get(key), dict) and isinstance(value, dict)
        out[key] = merge(out[key], value) if both else value
    return {"description": out.pop("description"), **out} if "description" in out else out


class SchemaBuilder:
    """Collects `$defs` while turning annotations into schemas."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self._names: dict[type, str] = {}
        self._building: set[type] = set()

    def of(self, tp: Any) -> dict[str, Any]:
        """The schema of a type annotation."""
        origin, args = get_origin(tp), get_args(tp)
        if origin is Annotated:
            return self._annotated(args[0], tp.__metadata__)
        if dataclasses.is_dataclass(tp):
            return _ref(self.dataclass(tp))
        if tp is Any:
            return {}
        if tp in _JSON_TYPES:
            return {"type": _JSON_TYPES[tp]}
        if origin is Literal:
            return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
        if origin in (Union, types.UnionType):
            return self._union(args)
        if origin in (tuple, list):
            return self._array(origin, args)
        if origin is dict:
            return self._object(*args)
        raise TypeError(f"no JSON Schema for the annotation {tp!r}")

    def resolve(self, value: Any) -> Any:
        """Schema keywords with every type inside them replaced by its schema."""
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, type) or get_origin(value) is not None:
            return self.of(value)
        return value

    def dataclass(self, cls: type) -> str:
        """The `$defs` name of a dataclass's closed object, defined on first use."""
        if cls in self._names:
            return self._names[cls]
        if cls in self._building:
            raise TypeError(f"{cls.__name__} contains itself; JSON Schema $refs would loop")
        self._building.add(cls)
        extra = dict(cls.__dict__.get("__schema__") or EXTERNAL.get(cls, {}))
        name = extra.pop("$def", re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower())
        overrides = extra.pop("types", {})
        fields = dataclasses.fields(cls)
        if unknown := set(overrides) - {f.name for f in fields}:
            raise TypeError(f"{cls.__name__} has no field {sorted(unknown)} to give a schema type")
        hints = get_type_hints(cls, include_extras=True) | overrides
        properties, required = {}, []
        for f in fields:
            absent = f.metadata.get("absent_if_none", False)  # None is written by omission: not required, no null
            tp = _without_none(hints[f.name]) if absent else hints[f.name]
            properties[f.name] = merge(self.of(tp), self.resolve(f.metadata.get("schema", {})))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and not absent:
                required.append(f.name)
        body = {"type": "object", "required": required, "additionalProperties": False, "properties": properties}
        self._define(name, merge(body, self.resolve(extra)))
        self._building.discard(cls)
        self._names[cls] = name
        return name

    def _define(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        if self.defs.setdefault(name, schema) != schema:
            raise TypeError(f"two different schemas are named {name!r} in $defs")
        return _ref(name)

    def _annotated(self, base: Any, metadata: tuple[Any, ...]) -> dict[str, Any]:
        schema, name = self.of(base), None
        for keywords in metadata:
            if isinstance(keywords, dict):
                keywords = dict(keywords)
                name = keywords.pop("$def", name)
                schema = merge(schema, self.resolve(keywords))
        return self._define(name, schema) if name else schema

    def _union(self, args: tuple[Any, ...]) -> dict[str, Any]:
        schemas = [self.of(a) for a in args if a is not type(None)]
        if len(schemas) < len(args):  # nullable: a plain type takes "null" beside it, anything else an anyOf branch
            if len(schemas) == 1 and list(schemas[0]) == ["type"] and isinstance(schemas[0]["type"], str):
                return {"type": [schemas[0]["type"], "null"]}
            schemas.append({"type": "null"})
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}

    def _array(self, origin: type, args: tuple[Any, ...]) -> dict[str, Any]:
        if origin is list or args[1:] == (Ellipsis,):
            return {"type": "array", "items": self.of(args[0])}
        items = [self.of(a) for a in args]
        same = all(item == items[0] for item in items)
        return {"type": "array", **({"items": items[0]} if same else {"prefixItems": items}),
                "minItems": len(items), "maxItems": len(items)}  # fmt: skip

    def _object(self, key: Any, value: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object"}
        if key is not str:
            schema["propertyNames"] = self.of(key)
        if value is not Any:
            schema["additionalProperties"] = self.of(value)
        return schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


def _without_none(tp: Any) -> Any:
    return Union[tuple(a for a in get_args(tp) if a is not type(None))]  # noqa: UP007 (a union built at run time)


def build() -> dict[str, Any]:
    """The manifest's JSON Schema: `Manifest` at the root, every other object in `$defs`."""
    builder = SchemaBuilder()
    root = builder.defs.pop(builder.dataclass(Manifest))
    head = {"$schema": DRAFT, "$id": root.pop("$id"), "title": root.pop("title")}
    return {**head, **root, "$defs": builder.defs}


def _dump(value: Any, indent: int = 0, room: int = WIDTH) -> str:
    """JSON with an object or array on one line where it fits in `room` characters, else a member a line."""
    flat = json.dumps(value)
    if len(flat) <= room or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, list):
        members = [pad + _dump(v, indent + 2, WIDTH - len(pad) - 1) for v in value]
    else:
        keys = {k: json.dumps(k) + ": " for k in value}
        members = [pad + keys[k] + _dump(v, indent + 2, WIDTH - len(pad) - len(keys[k]) - 1) for k, v in value.items()]
    brackets = "[]" if isinstance(value, list) else "{}"
    return brackets[0] + "\n" + ",\n".join(members) + "\n" + " " * indent + brackets[1]


def render() -> str:
    """The schema file's text: JSON in the generator's key order, ASCII, short objects on one line (the file is
    read by people writing apps), a trailing newline."""
    return _dump(build()) + "\n"


def main() -> None:
    PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
