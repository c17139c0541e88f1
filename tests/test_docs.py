"""The documentation: the generated configuration reference, the site's strict build, the README, and
that nothing in the repository points outside it (docs/development.md, "Tests")."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "src" / "ta2d" / "schemas" / "config.schema.yaml"
HOOK = REPO / "docs" / "hooks" / "config_reference.py"
MKDOCS = Path(sys.executable).with_name("mkdocs")
GENERATED_PAGES = {"configuration-reference.md"}  # written by the hook at build time, not in docs/


def load_hook():
    spec = importlib.util.spec_from_file_location("config_reference_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schema_keys(schema: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON schema, walked here independently of the hook: `properties`, maps of
    user-named entries (`additionalProperties` with a schema: a placeholder segment None), keys inside
    `oneOf` / `anyOf` alternatives and inside array `items`."""
    out = []
    for name, sub in schema.get("properties", {}).items():
        out.append(prefix + (name,))
        out += schema_keys(sub, prefix + (name,))
    if isinstance(schema.get("additionalProperties"), dict):
        out.append(prefix + (None,))
        out += schema_keys(schema["additionalProperties"], prefix + (None,))
    for alt in schema.get("oneOf", []) + schema.get("anyOf", []):
        out += schema_keys(alt, prefix)
    if isinstance(schema.get("items"), dict):
        last = "<name>" if prefix and prefix[-1] is None else (prefix[-1] if prefix else "")
        out += schema_keys(schema["items"], prefix[:-1] + (last + "[]",))
    return out


def entry_pattern(path: tuple) -> re.Pattern:
    """A Markdown heading that names the key path in a code span (`train.runs.<run>.lr`)."""
    parts = [r"<[A-Za-z_]+>" if p is None else re.escape(p) for p in path]
    return re.compile(r"^#{1,6} `" + r"\.".join(parts) + r"`", re.MULTILINE)


def show(path: tuple) -> str:
    return ".".join("<name>" if p is None else p for p in path)


# --- the configuration reference --------------------------------------------------------------------

def test_the_reference_has_an_entry_for_every_key_of_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    page = load_hook().render_reference(schema)
    keys = schema_keys(schema)
    assert len(keys) > 100  # the walk reaches the nested keys (train.runs.<run>.*, maps.correction.*)
    missing = [show(k) for k in keys if not entry_pattern(k).search(page)]
    assert not missing, "configuration reference has no entry for: " + ", ".join(missing)


def test_the_reference_of_a_small_schema():
    schema = {
        "type": "object",
        "required": ["area"],
        "properties": {
            "area": {
                "type": "object",
                "description": "Where.",
                "properties": {"size": {"type": "integer", "minimum": 3, "not": {"multipleOf": 2}, "default": 9,
                                        "description": "Side in   pixels, odd."}},
            },
            "runs": {
                "type": "object",
                "default": {},
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.002},
                        "mode": {"enum": ["a", "b"], "default": "a"},
                        "drop": {"type": "array", "items": {"enum": ["doy", "hour"]}, "default": []},
                    },
                },
            },
            "model": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}], "default": "best"},
        },
    }
    page = load_hook().render_reference(schema)
    assert "## `area` { #area }\n\n- **Type:** object (required)\n\nWhere.\n" in page
    assert ("### `area.size` { #area.size }\n\n- **Type:** integer\n- **Default:** `9`\n- **Limits:** ≥ 3; odd\n\n"
            "Side in pixels, odd.\n") in page
    assert ("### `runs.<run>.lr` { #runs.run.lr }\n\n- **Type:** number\n- **Default:** `0.002`\n"
            "- **Limits:** > 0\n") in page
    assert "### `runs.<run>.mode` { #runs.run.mode }\n\n- **Type:** string\n- **Default:** `\"a\"`\n" \
           "- **Allowed values:** `\"a\"`, `\"b\"`\n" in page
    assert "- **Type:** array of string\n- **Default:** `[]`\n- **Allowed values:** `\"doy\"`, `\"hour\"`\n" in page
    assert "## `model` { #model }\n\n- **Type:** string, or array of string\n- **Default:** `\"best\"`\n" in page
    assert {show(k) for k in schema_keys(schema)} == {
        "area", "area.size", "runs", "runs.<name>", "runs.<name>.lr", "runs.<name>.mode", "runs.<name>.drop", "model"}


# --- the site -----------------------------------------------------------------------------------------

def repo_text_files() -> list[tuple[str, str]]:
    """(path, text) of the repository's files: tracked and new ones git does not ignore; binaries skipped."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    files = []
    for name in sorted(set(out.decode().split("\0")) - {""}):
        path = REPO / name
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        files.append((name, data.decode("utf-8", errors="replace")))
    return files


def page_html(site: Path, page: str) -> Path:
    stem = page[: -len(".md")]
    if stem == "index" or stem.endswith("/index"):
        return site / stem[: -len("index")] / "index.html"
    return site / stem / "index.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, "mkdocs build --strict failed:\n" + r.stdout[-3000:] + r.stderr[-5000:]
    assert "WARNING" not in r.stderr, r.stderr[-5000:]
    return out


def test_the_site_builds_with_strict(site):
    assert (site / "index.html").is_file()
    reference = page_html(site, "configuration-reference.md").read_text(encoding="utf-8")
    assert 'id="train.runs.run.lr"' in reference and 'id="inputs.l1b.dir"' in reference


CITATION = re.compile(r"\bdocs/((?:[\w-]+/)*[\w-]+\.md)(?:#([\w.-]+))?")


def test_every_docs_page_and_anchor_cited_in_the_repository_exists(site):
    """Code, configs and READMEs cite docs/<page>.md#<anchor>: each must exist in the built site."""
    bad = []
    for name, text in repo_text_files():
        if name == "tests/test_docs.py":
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for m in CITATION.finditer(line):
                page, anchor = m.group(1), m.group(2)
                html = page_html(site, page)
                if not html.is_file() or not ((REPO / "docs" / page).is_file() or page in GENERATED_PAGES):
                    bad.append(f"{name}:{lineno}: docs/{page} is not a page of the site")
                elif anchor and f'id="{anchor}"' not in html.read_text(encoding="utf-8"):
                    bad.append(f"{name}:{lineno}: docs/{page} has no anchor #{anchor}")
    assert not bad, "citations of the docs that do not resolve:\n" + "\n".join(bad)


# --- the README ---------------------------------------------------------------------------------------

def test_the_readme_is_short_and_starts_with_its_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, f"README.md has {len(text.splitlines())} lines (at most 150)"
    first_block = re.search(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert first_block, "README.md has no code block"
    commands = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines() if ln.strip()]
    assert commands[:2] == ["make demo", "make test"], commands


# --- nothing points outside the repository ------------------------------------------------------------

OUTSIDE = [
    (re.compile(r"\.\./shared\b"), "a path outside the repository"),
    (re.compile(r"\bshared/(?:notes|tools)\b"), "the project's shared folder, which clones do not have"),
    (re.compile(r"\bDESIGN\.md\b"), "a design document outside the repository"),
    (re.compile(r"\b[Ii]ssues? #?\d+"), "an issue number"),
    (re.compile(r"\(#\d+\)"), "an issue number"),
    (re.compile(r"\b[Ii]ssue \""), "an issue title"),
]
MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
# dates of work sessions, in the user-facing text only (test data legitimately uses 2026 dates)
SESSION_DATES = [(re.compile(rf"\b(?:{MONTHS}) 20\d\d\b"), "a date of work"),
                 (re.compile(r"\b2026-\d\d(?:-\d\d)?\b"), "a date of work")]
USER_TEXT = re.compile(r"^(?:README\.md|docs/.*|config/.*|mkdocs\.yml)$")


def test_no_file_points_outside_the_repository():
    hits = []
    for name, text in repo_text_files():
        if name == "tests/test_docs.py":
            continue
        patterns = OUTSIDE + (SESSION_DATES if USER_TEXT.match(name) else [])
        for lineno, line in enumerate(text.splitlines(), 1):
            for pattern, what in patterns:
                m = pattern.search(line)
                if m:
                    hits.append(f"{name}:{lineno}: {what}: {m.group(0)!r}: {line.strip()[:120]}")
    assert not hits, f"{len(hits)} references outside the repository:\n" + "\n".join(hits)


def test_every_test_the_docs_name_exists():
    """docs/ pages (the fault table above all) name tests as `tests/<file>.py::<test>`: each must be a test function
    of that file, so a renamed test cannot leave a row pointing at nothing."""
    missing = []
    for page in sorted((REPO / "docs").rglob("*.md")):
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", page.read_text(encoding="utf-8")):
            source = REPO / path
            if not source.is_file() or not re.search(rf"^def {name}\(", source.read_text(encoding="utf-8"), re.M):
                missing.append(f"{page.relative_to(REPO)}: {path}::{name}")
    assert not missing, "docs name tests that do not exist:\n" + "\n".join(missing)
