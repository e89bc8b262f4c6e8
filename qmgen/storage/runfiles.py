"""The run files of ``qmgen generate`` in a dataset directory, and their checks.

    DIR/config.json   options, input file and its SHA-256, options_hash, plan_hash
    DIR/plan.json     the shard plan (molecule indices per shard), hashed over itself

Both are read by ``qmgen verify`` without importing the pipeline.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from qmgen.storage.manifest import DatasetIndexError, is_sha256, load_json

PLAN_NAME = "plan.json"
CONFIG_NAME = "config.json"


def json_digest(doc) -> str:
    """SHA-256 of a JSON document in canonical form (sorted keys): options, plans."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def read_json(path) -> dict | None:
    """Parsed JSON file, or None when it does not exist; malformed JSON raises
    :class:`~qmgen.storage.manifest.DatasetIndexError` naming the file and line."""
    path = Path(path)
    if not path.exists():
        return None
    return load_json(path)


def _hex_digest(doc: dict, key: str, where: str, required: bool = True) -> None:
    value = doc.get(key)
    if value is None and not required:
        return
    if not is_sha256(value):
        raise DatasetIndexError(f"{where}: {key} is not a SHA-256 hex digest")


def check_config(doc, where: str) -> dict:
    """Validate a config.json document (types of options, input, hashes); returns it."""
    if not isinstance(doc, dict):
        raise DatasetIndexError(f"{where}: not a JSON object")
    if not isinstance(doc.get("options"), dict) or not isinstance(doc.get("input"), dict):
        raise DatasetIndexError(f"{where}: needs 'options' and 'input' objects")
    _hex_digest(doc, "options_hash", where)
    _hex_digest(doc["input"], "sha256", f"{where}: input")
    _hex_digest(doc, "plan_hash", where, required=False)
    return doc


def check_plan(doc, where: str) -> dict:
    """Validate a plan.json document: its hash over its own body, shard ids 0..n-1 and
    non-negative counts; returns it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("shards"), list):
        raise DatasetIndexError(f"{where}: not a plan (an object with a 'shards' list)")
    _hex_digest(doc, "plan_hash", where)
    body = {k: v for k, v in doc.items() if k != "plan_hash"}
    if json_digest(body) != doc["plan_hash"]:
        raise DatasetIndexError(f"{where}: plan_hash does not match the plan's content")
    for i, shard in enumerate(doc["shards"]):
        ok = isinstance(shard, dict) and shard.get("shard_id") == i
        ok = ok and _count_ok(shard.get("n_conformers"))
        indices = shard.get("molecule_indices") if ok else None
        if not ok or not isinstance(indices, list) or not all(map(_count_ok, indices)):
            raise DatasetIndexError(f"{where}: shards[{i}] is not a valid shard plan")
    return doc


def _count_ok(value) -> bool:
    return type(value) is int and 0 <= value < 2**62
