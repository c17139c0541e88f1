"""MkDocs hook: the configuration reference page, generated from the config schema at build time.

`render_reference(schema)` turns the JSON schema of the workflow configuration
(src/ta2d/schemas/config.schema.yaml) into one Markdown page with an entry per key path
(`inputs.l1b.dir`, `train.runs.<run>.lr`, ...): type, default, allowed values, limits and the
schema's description. `on_files` adds that page to the site as a generated file
(configuration-reference.md), so the reference cannot drift from the schema and nothing is
written into docs/. tests/test_docs.py checks that every key of the schema has its entry.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

PAGE = "configuration-reference.md"
SCHEMA = Path("src") / "ta2d" / "schemas" / "config.schema.yaml"  # relative to mkdocs.yml


def key_paths(schema: dict, prefix: str = "") -> list[tuple[str, dict, bool]]:
    """(key path, sub-schema, required) for every key below `schema`, parents before children.

    Keys come from `properties`; a map whose keys are names the user picks (`additionalProperties`
    with a schema, e.g. train.runs) adds one placeholder key, `<run>` for `runs`; keys inside
    `oneOf`/`anyOf` alternatives and inside array `items` count as keys of their parent.
    """
    out: list[tuple[str, dict, bool]] = []
    required = set(schema.get("required", []))
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        out.append((path, sub, name in required))
        out.extend(key_paths(sub, path))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        path = f"{prefix}.{_placeholder(prefix)}" if prefix else _placeholder(prefix)
        out.append((path, extra, False))
        out.extend(key_paths(extra, path))
    for alt in (schema.get("oneOf") or []) + (schema.get("anyOf") or []):
        out.extend(key_paths(alt, prefix))
    items = schema.get("items")
    if isinstance(items, dict):
        out.extend(key_paths(items, f"{prefix}[]" if prefix else "[]"))
    return out


def _placeholder(prefix: str) -> str:
    """`<run>` for the entries of `train.runs`: the parent's last key, singular."""
    last = prefix.rsplit(".", 1)[-1].strip("<>[]") or "name"
    return f"<{last[:-1] if last.endswith('s') and len(last) > 1 else last}>"


def anchor(path: str) -> str:
    """The entry's anchor: the key path without placeholder brackets (`train.runs.run.lr`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "", path.replace("[]", ".item"))


def type_text(schema: dict) -> str:
    """`integer`, `object or null`, `array of string`, `string, or array of string`, ..."""
    alts = (schema.get("oneOf") or []) + (schema.get("anyOf") or [])
    if alts:
        return ", or ".join(type_text(alt) for alt in alts)
    if "const" in schema:
        return f"the value {_value(schema['const'])}"
    types = schema.get("type")
    if types is None:
        if "enum" in schema:
            kinds = {_json_type(v) for v in schema["enum"]}
            return " or ".join(sorted(kinds))
        return "any"
    types = [types] if isinstance(types, str) else list(types)
    words = []
    for t in types:
        if t == "array" and isinstance(schema.get("items"), dict):
            words.append(f"array of {type_text(schema['items'])}")
        else:
            words.append(t)
    return " or ".join(words)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _value(value) -> str:
    """A value as a config file may write it (JSON is YAML's flow style), in a code span."""
    text = json.dumps(value, ensure_ascii=False)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def allowed_values(schema: dict) -> list:
    """The values an `enum` (of the key, of its array items, or of its oneOf alternatives) allows."""
    values = list(schema.get("enum", []))
    if isinstance(schema.get("items"), dict):
        values += schema["items"].get("enum", [])
    for alt in (schema.get("oneOf") or []) + (schema.get("anyOf") or []):
        values += allowed_values(alt)
        if "const" in alt:
            values.append(alt["const"])
    return values


def limits(schema: dict) -> list[str]:
    """Numeric, length and pattern limits, in words."""
    words = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in schema:
            words.append(f"{sign} {schema[key]}")
    if schema.get("not") == {"multipleOf": 2}:
        words.append("odd")
    if "format" in schema:
        words.append(f"format {schema['format']}")
    if "pattern" in schema:
        words.append(f"matches `{schema['pattern']}`")
    if "minLength" in schema:
        words.append(f"at least {schema['minLength']} character(s)")
    if "minItems" in schema and schema.get("minItems") == schema.get("maxItems"):
        words.append(f"exactly {schema['minItems']} items")
    else:
        if "minItems" in schema:
            words.append(f"at least {schema['minItems']} item(s)")
        if "maxItems" in schema:
            words.append(f"at most {schema['maxItems']} items")
    if schema.get("uniqueItems"):
        words.append("no repeated items")
    names = (schema.get("propertyNames") or {}).get("pattern")
    if names:
        words.append(f"names match `{names}`")
    items = schema.get("items")
    if isinstance(items, dict) and not items.get("properties"):
        words += [f"each item {w}" for w in limits(items)]
    for alt in (schema.get("oneOf") or []) + (schema.get("anyOf") or []):
        words += limits(alt)
    return words


def _text(description: str) -> str:
    """A schema description as Markdown text: whitespace folded, `<` and `*` taken literally."""
    text = " ".join(str(description).split())
    return text.replace("<", "&lt;").replace("*", r"\*")


def render_reference(schema: dict) -> str:
    """The configuration reference page (Markdown) for a config JSON schema."""
    lines = [
        "# Configuration reference",
        "",
        "Every key of the workflow configuration, generated from the schema the workflow validates "
        "every config against (`src/ta2d/schemas/config.schema.yaml`, also at "
        "`workflow/schemas/config.schema.yaml`) each time the site is built: this page cannot drift from it. "
        "A key left out takes its default; an unknown key or a wrong value stops the workflow before any "
        "job runs, naming the key. `<run>` stands for a name you choose. How to put a configuration "
        "together: [Configuration](configuration.md).",
        "",
    ]
    if schema.get("description"):
        lines += [_text(schema["description"]), ""]
    required_top = schema.get("required", [])
    if required_top:
        lines += ["Required at the top level: " + ", ".join(f"`{k}`" for k in required_top) + ".", ""]
    for path, sub, required in key_paths(schema):
        depth = path.count(".")
        level = "##" if depth == 0 else "###"
        lines += [f"{level} `{path}` {{ #{anchor(path)} }}", ""]
        facts = [f"**Type:** {type_text(sub)}" + (" (required)" if required else "")]
        if "default" in sub:
            facts.append(f"**Default:** {_value(sub['default'])}")
        values = allowed_values(sub)
        if values:
            facts.append("**Allowed values:** " + ", ".join(_value(v) for v in values))
        lim = limits(sub)
        if lim:
            facts.append("**Limits:** " + "; ".join(lim))
        lines += [f"- {fact}" for fact in facts]
        lines.append("")
        if sub.get("description"):
            lines += [_text(sub["description"]), ""]
    return "\n".join(lines)


def _schema_path(config) -> Path:
    return Path(config["config_file_path"]).parent / SCHEMA


def on_files(files, config):
    """Add the generated reference page to the site's files (nothing is written into docs/)."""
    from mkdocs.structure.files import File

    schema = yaml.safe_load(_schema_path(config).read_text(encoding="utf-8"))
    existing = files.get_file_from_path(PAGE)
    if existing is not None:
        files.remove(existing)
    files.append(File.generated(config, PAGE, content=render_reference(schema)))
    return files


def on_serve(server, config, builder):
    """`mkdocs serve` rebuilds when the schema changes."""
    server.watch(str(_schema_path(config)))
    return server
