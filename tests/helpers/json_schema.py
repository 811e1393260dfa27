"""Check a ``--json`` document against its published schema (docs/schema/<command>.schema.json)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schema"


def schema(command: str) -> dict:
    """The schema of ``command``'s --json output, itself checked against the JSON Schema meta-schema."""
    doc = json.loads((SCHEMAS / f"{command}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def validate(command: str, document: dict) -> dict:
    """Raise ``jsonschema.ValidationError`` unless ``document`` follows ``command``'s schema; the document."""
    jsonschema.Draft202012Validator(schema(command)).validate(document)
    return document
