"""``qmgen verify``: every shard (existence, size, SHA-256, HDF5 schema, CSR offsets, row
counts) and the run files checked against index.json and manifest.jsonl."""

from __future__ import annotations

import warnings
from pathlib import Path

from qmgen.storage import manifest as mf
from qmgen.storage.check import check_shard
from qmgen.storage.files import sha256_file


def verify_dataset(root) -> tuple[list[tuple[str, str, str]], dict]:
    """Check a dataset directory; return (problems, summary).

    Each problem is (kind, file, message) with kind "MISSING", "CORRUPT" or "INDEX".
    Checked: index.json, manifest.jsonl, config.json and plan.json parse and hold valid
    values that agree with each other; every shard file lies inside ``shards/`` (after
    symlinks) and is listed once; its size, SHA-256, HDF5 schema, CSR offsets and row
    counts; no shard refers to data outside itself (external links, virtual datasets,
    external storage). A file outside the dataset is never opened. The summary counts
    shards, conformers and failure records and lists notes (torn manifest tail, orphan or
    temporary files) that are not errors.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    problems, notes = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            manifest = {int(e["shard_id"]): e for e in mf.read_manifest(root)}
        except mf.DatasetIndexError as err:
            problems.append(("INDEX", mf.MANIFEST_NAME, str(err)))
            manifest = {}
    notes += [str(w.message) for w in caught]
    try:
        index = mf.read_index(root)
    except FileNotFoundError:
        problems.append(("INDEX", mf.INDEX_NAME, "missing (unfinished run?)"))
        index = mf.build_index({}, list(manifest.values()))
    except mf.DatasetIndexError as err:
        problems.append(("INDEX", mf.INDEX_NAME, str(err)))
        index = mf.build_index({}, list(manifest.values()))
    problems += _verify_table(root, index)
    problems += _verify_run_files(root, index)
    table = index["table"]
    ids = set(table.shard_id.tolist())
    inodes: dict = {}
    known: set = set()
    for s in range(len(table)):
        shard = table[s]
        known.add((root / shard["file"]).resolve())
        problems += _verify_shard(root, shard, manifest.get(shard["shard_id"]), inodes)
    for sid in sorted(set(manifest) - ids):
        entry = manifest[sid]
        if not (root / entry["file"]).is_file():
            problems.append(("MISSING", entry["file"], "listed in manifest.jsonl, file not found"))
        else:
            problems.append(("INDEX", entry["file"], "in manifest.jsonl but not in index.json"))
    known |= {(root / e["file"]).resolve() for e in manifest.values()}
    shard_dir = root / mf.SHARDS_DIR
    files = sorted(shard_dir.rglob("*.h5")) if shard_dir.is_dir() else []
    for path in files:
        if path.resolve() not in known and ".staging" not in path.parts:
            notes.append(f"{path.relative_to(root)}: shard file not in index or manifest")
    for path in sorted(shard_dir.rglob(".*.tmp-*")) if shard_dir.is_dir() else []:
        notes.append(f"{path.relative_to(root)}: temporary file of an interrupted write")
    summary = dict(
        n_shards=len(table),
        n_rows=int(table.offsets[-1]),
        n_failures=int(table.n_failures.sum()),
        notes=notes,
    )
    return problems, summary


def _verify_table(root: Path, index: dict) -> list[tuple[str, str, str]]:
    """The SHA-256 of a compact index's shard table against index.json (opening a dataset
    checks the table's size and values, not its hash)."""
    spec = index.get("table_spec")
    if spec is None:
        return []
    path = root / spec["file"]
    if sha256_file(path) != spec.get("sha256"):
        return [("CORRUPT", spec["file"], "shard table's sha256 differs from index.json's")]
    return []


def _verify_run_files(root: Path, index: dict) -> list[tuple[str, str, str]]:
    """config.json and plan.json of ``qmgen generate``: valid, and agreeing with the index
    (options hash, plan hash, shard ids). A dataset without them (made by another tool)
    is not an error."""
    from qmgen.storage.runfiles import CONFIG_NAME, PLAN_NAME, check_config, check_plan, read_json

    docs = {}
    for name, check in ((CONFIG_NAME, check_config), (PLAN_NAME, check_plan)):
        try:
            doc = read_json(root / name)
            docs[name] = None if doc is None else check(doc, name)
        except mf.DatasetIndexError as err:
            return [("INDEX", name, str(err))]
    config, plan = docs[CONFIG_NAME], docs[PLAN_NAME]
    out = []
    stored_hash = index["attrs"].get("options_hash")
    if config is not None and stored_hash is not None and stored_hash != config["options_hash"]:
        out.append(("INDEX", CONFIG_NAME, "options_hash differs from index.json's"))
    if config is not None and plan is not None:
        if config.get("plan_hash") not in (None, plan["plan_hash"]):
            out.append(("INDEX", PLAN_NAME, "plan_hash differs from config.json's"))
        if plan.get("options_hash") != config["options_hash"]:
            out.append(("INDEX", PLAN_NAME, "options_hash differs from config.json's"))
    if plan is not None and (root / mf.INDEX_NAME).exists():
        planned = [s["shard_id"] for s in plan["shards"]]
        if index["table"].shard_id.tolist() != planned:
            out.append(("INDEX", mf.INDEX_NAME, "its shard ids are not those of plan.json"))
    return out


def _verify_shard(
    root: Path, shard: dict, entry: dict | None, inodes: dict
) -> list[tuple[str, str, str]]:
    name = shard["file"]
    try:
        path = mf.shard_file(root, name, f"shard {shard['shard_id']}")
    except mf.DatasetIndexError as err:
        return [("INDEX", str(name)[:200], str(err))]  # never opened
    if not path.is_file():
        return [("MISSING", name, "listed in index.json, file not found")]
    out = []
    if entry is None:
        out.append(("INDEX", name, "in index.json but has no manifest.jsonl line"))
    elif entry["sha256"] != shard["sha256"]:
        out.append(("INDEX", name, "manifest.jsonl and index.json record different sha256"))
    st = path.stat()
    other = inodes.setdefault((st.st_dev, st.st_ino), name)
    if other != name:
        out.append(("INDEX", name, f"is the same file as {other} (hard link or symlink)"))
    if shard.get("size") is not None and st.st_size != int(shard["size"]):
        out.append(("CORRUPT", name, f"size {st.st_size} bytes, index.json says {shard['size']}"))
    digest = sha256_file(path)
    if digest != shard["sha256"]:
        out.append(("CORRUPT", name, f"sha256 {digest} != index.json {shard['sha256']}"))
    for problem in check_shard(path, int(shard["n_rows"]), int(shard["n_failures"])):
        out.append(("CORRUPT", name, problem))
    return out
