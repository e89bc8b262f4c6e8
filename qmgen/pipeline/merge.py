"""``qmgen merge OUT DIR...``: one dataset from datasets computed by independent runs.

Large jobs rarely run as one process: a SLURM job array runs ``qmgen generate --split K/N``
once per part, each into its own directory. Merging puts their shards, in the order the
sources are given, into one dataset directory without recomputing anything:

- **Refusals** (before anything is written; the message names the source and the option):
  a source without index.json (unfinished run), another shard schema version, another
  level of theory or chemistry option (:data:`MERGE_KEYS`: xc, basis, grid, precision,
  forces, conv_tol, max_cycle, conformers, optimize, prune_rms, seed, elements,
  max_atoms), a directory given twice, OUT inside a source, and two sources that would
  store the same input lines twice (same input file, unless both are different parts
  ``K/N`` of one split with the same ``--limit``). Options that only lay out work (shard
  size, chunk and batch sizes) may differ.
- **No shard bytes copied** where the file system allows: each shard file is hard-linked
  to its place in OUT (``link``, the default; a copy where the OS refuses the link, e.g.
  across file systems), or moved (``move``: the sources lose their shards) or copied
  (``copy``). OUT never refers to a file outside itself: a link is a second name of the
  same bytes inside OUT, not a reference.
- **Checksums re-verified**: every shard file in OUT is hashed and compared with its
  source's shard table before its manifest line is written; a mismatch stops the merge
  naming the file.
- **Crash-safe**: OUT gets ``merge.json`` (the sources and their table checksums) first,
  then a manifest line per shard (fsync'd in blocks), then index.json last. Rerunning the
  same command resumes (shards with a manifest line and a file of the right size are
  kept); different sources into an unfinished OUT are refused.

Shard ids in OUT are positions: the shards of the first source, then the second's, and so
on. ``attrs["merged_from"]`` records, per source, its path, first shard in OUT, shard
and row counts, options hash, input checksum and split.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

from qmgen.errors import UserError
from qmgen.storage import manifest as mf
from qmgen.storage.files import atomic_write_text, fsync, sha256_file
from qmgen.storage.runfiles import read_json
from qmgen.storage.schema import SCHEMA_VERSION
from qmgen.storage.table import shard_relpath

MERGE_NAME = "merge.json"
MODES = ("link", "copy", "move")
MERGE_KEYS = (
    "xc",
    "basis",
    "grid_level",
    "precision",
    "forces",
    "conv_tol",
    "max_cycle",
    "conformers",
    "optimize",
    "prune_rms",
    "seed",
    "elements",
    "max_atoms",
    "density_fit",
    "open_shell",
    "unrestricted",
)
SYNC_EVERY = 1024  # manifest lines (and new shard directories) fsync'd per block


class MergeError(UserError):
    """The sources cannot be merged (the message names the source and the reason)."""


# ------------------------------------------------------------------ sources
def _setting(attrs: dict, key: str):
    config = attrs.get("config")
    if isinstance(config, dict) and key in config:
        return config[key]
    return attrs.get(key)


def _parts(attrs: dict) -> list[tuple]:
    """The (input sha256, split) pairs whose lines a dataset holds (a merged dataset
    holds those of all its sources)."""
    merged = attrs.get("merged_from")
    if isinstance(merged, list):
        return [
            (m.get("input_sha256"), m.get("split"), m.get("limit"))
            for m in merged
            if isinstance(m, dict)
        ]
    source = attrs.get("input")
    sha = source.get("sha256") if isinstance(source, dict) else None
    return [(sha, _setting(attrs, "split"), _setting(attrs, "limit"))]


def _split(value) -> tuple[int, int] | None:
    """``(K, N)`` of a "K/N" split; None for no split (or one that cannot be read, which
    then counts as the whole input)."""
    try:
        k, n = str(value).split("/")
        return int(k), int(n)
    except ValueError:
        return None


def _overlap(a: tuple, b: tuple) -> bool:
    """True when parts ``a`` and ``b`` may hold the same input lines."""
    if a[0] is None or a[0] != b[0]:
        return False  # different (or unknown) inputs: their line numbers do not collide
    if a[2] != b[2]:
        return True  # parts of different --limit cuts of one input: not one split
    sa, sb = _split(a[1]), _split(b[1])
    return sa is None or sb is None or sa[1] != sb[1] or sa[0] == sb[0]


def load_sources(out: Path, sources) -> list[dict]:
    """Read and cross-check the sources' indexes; returns one dict per source (path,
    index). Raises :class:`MergeError` naming the first problem."""
    if not sources:
        raise MergeError("merge needs at least one source dataset directory")
    out_real = os.path.realpath(out)
    loaded: list[dict] = []
    seen: dict[str, Path] = {}
    for src in map(Path, sources):
        real = os.path.realpath(src)
        if real in seen:
            raise MergeError(f"{src} is given twice (as {seen[real]} too)")
        seen[real] = src
        if os.path.commonpath([real, out_real]) == real:
            raise MergeError(f"OUT {out} is {src} or inside it; choose a directory elsewhere")
        if not (src / mf.INDEX_NAME).is_file():
            raise MergeError(
                f"{src} has no {mf.INDEX_NAME} (an unfinished run?); finish it (rerun its "
                "qmgen generate) before merging"
            )
        index = mf.read_index(src)
        if index["schema_version"] != SCHEMA_VERSION:
            raise MergeError(
                f"{src}: shard schema version {index['schema_version']}; this qmgen merges "
                f"version {SCHEMA_VERSION} datasets only"
            )
        loaded.append({"path": src, "index": index})
    first = loaded[0]
    for other in loaded[1:]:
        diffs = [
            f"{k}: {_setting(first['index']['attrs'], k)!r} in {first['path']}, "
            f"{_setting(other['index']['attrs'], k)!r} in {other['path']}"
            for k in MERGE_KEYS
            if _setting(first["index"]["attrs"], k) != _setting(other["index"]["attrs"], k)
        ]
        if diffs:
            raise MergeError(
                "the sources differ in level of theory or options: " + "; ".join(diffs)
            )
    parts = [(s["path"], p) for s in loaded for p in _parts(s["index"]["attrs"])]
    for i, (pa, a) in enumerate(parts):
        for pb, b in parts[i + 1 :]:
            if _overlap(a, b):
                if a[2] != b[2]:
                    what = f"--limit {a[2]} and {b[2]}"
                elif a[1] and b[1]:
                    what = f"splits {a[1]} and {b[1]}"
                else:
                    what = "no disjoint --split"
                raise MergeError(
                    f"{pa} and {pb} were computed from the same input file ({what}): merging "
                    "them would store the same input lines twice"
                )
    return loaded


def _identity(loaded: list[dict]) -> dict:
    """merge.json: what OUT is being made of (a resume must name the same sources)."""
    return dict(
        sources=[
            dict(
                path=str(Path(s["path"]).resolve()),
                n_shards=s["index"]["n_shards"],
                table_sha256=(s["index"].get("table_spec") or {}).get("sha256"),
                n_rows=s["index"]["n_rows"],
            )
            for s in loaded
        ]
    )


def _prepare_out(out: Path, identity: dict) -> bool:
    """Create OUT or check it for a resume; True when resuming an unfinished merge."""
    if out.exists() and not out.is_dir():
        raise MergeError(f"OUT {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    stored = read_json(out / MERGE_NAME)
    if stored is not None:
        if (out / mf.INDEX_NAME).exists():
            raise MergeError(f"{out} holds a finished merged dataset; choose another OUT")
        if stored != identity:
            raise MergeError(
                f"{out} holds an unfinished merge of other sources ({MERGE_NAME}); rerun that "
                "merge, or choose another OUT"
            )
        return True
    if any(p.name != ".qmgen.lock" for p in out.iterdir()):
        raise MergeError(f"OUT {out} is not empty; merge into a new or empty directory")
    atomic_write_text(out / MERGE_NAME, json.dumps(identity, indent=1, sort_keys=True) + "\n")
    return False


# ------------------------------------------------------------------ shard files
def _place(src: Path, dst: Path, mode: str) -> str:
    """Put ``src`` at ``dst`` (``link``: hard link, else copy; ``move``; ``copy``);
    returns what was done ("link", "copy" or "move")."""
    dst.unlink(missing_ok=True)  # a leftover of an interrupted merge
    if mode == "move":
        os.replace(src, dst)
        return "move"
    if mode == "link":
        try:
            os.link(src, dst)
            return "link"
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    fsync(tmp)
    os.replace(tmp, dst)
    return "copy"


def merge(out_dir, sources, *, mode: str = "link", progress: bool = False) -> dict:
    """Merge the dataset directories ``sources`` into ``out_dir`` (see the module doc).

    ``mode``: "link" (hard links, copying only where the file system refuses), "copy"
    or "move". Returns a summary: out_dir, n_shards, n_rows, n_failures, counts of
    linked/copied/moved/kept shards, wall_s.
    """
    from qmgen.pipeline.lock import DirectoryLock

    if mode not in MODES:
        raise MergeError(f"unknown merge mode {mode!r}; valid: {', '.join(MODES)}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    loaded = load_sources(out, sources)
    identity = _identity(loaded)
    out.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(out):
        resuming = _prepare_out(out, identity)
        kept = {}
        if resuming:
            kept = {e["shard_id"]: e for e in mf.iter_manifest(out)}
        counts = dict(link=0, copy=0, move=0, kept=0)
        total = sum(s["index"]["n_shards"] for s in loaded)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="shard", desc="qmgen merge", dynamic_ncols=True)
        merged_from, new_id, dirs = [], 0, set()
        with open(out / mf.MANIFEST_NAME, "ab+") as manifest:
            mf.cut_torn_tail(manifest)
            pending = 0
            for source in loaded:
                root, table = source["path"], source["index"]["table"]
                attrs = source["index"]["attrs"]
                merged_from.append(
                    dict(
                        path=str(Path(root).resolve()),
                        first_shard=new_id,
                        n_shards=len(table),
                        n_rows=int(table.offsets[-1]),
                        options_hash=attrs.get("options_hash"),
                        input_sha256=(attrs.get("input") or {}).get("sha256"),
                        split=_setting(attrs, "split"),
                        limit=_setting(attrs, "limit"),
                    )
                )
                rows = zip(
                    table.shard_id.tolist(),
                    table.n_rows.tolist(),
                    table.n_failures.tolist(),
                    table.data["size"].tolist(),
                    (bytes(d).hex() for d in table.data["sha256"]),
                    strict=True,
                )
                for s, row in enumerate(rows):
                    src = table.file(s)
                    done = _merge_shard(out, root, src, row, new_id, kept.get(new_id), mode)
                    dirs.add(os.path.dirname(os.path.join(out, shard_relpath(new_id))))
                    if done is None:
                        counts["kept"] += 1
                    else:
                        how, entry = done
                        counts[how] += 1
                        line = json.dumps(entry, sort_keys=True) + "\n"
                        manifest.write(line.encode())
                        pending += 1
                        if pending >= SYNC_EVERY:
                            _sync(manifest, dirs)
                            pending = 0
                    new_id += 1
                    if bar is not None:
                        bar.update()
            _sync(manifest, dirs)
        if bar is not None:
            bar.close()
        attrs = _merged_attrs(loaded, merged_from)
        header = mf.write_index(out, attrs, mf.iter_manifest(out))
    return dict(
        out_dir=str(out),
        n_shards=header["n_shards"],
        n_rows=header["n_rows"],
        n_failures=header["n_failures"],
        **{f"n_{k}": v for k, v in counts.items()},
        wall_s=round(time.perf_counter() - t0, 3),
    )


def _merge_shard(out: Path, root: Path, name: str, row: tuple, new_id: int, kept, mode: str):
    """Place the source shard ``name`` (its table ``row``: shard_id, n_rows, n_failures,
    size, sha256) as shard ``new_id`` of OUT; None when an earlier run of this merge did
    (its manifest line and file size match), else (how, entry)."""
    sid, n_rows, n_failures, size, sha = row
    rel = shard_relpath(new_id)
    dst = os.path.join(out, rel)
    if kept is not None and kept["sha256"] == sha and os.path.isfile(dst):
        if size < 0 or os.stat(dst).st_size == size:
            return None
    where = f"{root}: shard {sid}"
    src = mf.shard_file(root, name, where)
    if not src.is_file():
        raise MergeError(f"{where}: file {src} is missing; the source is incomplete")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    how = _place(src, Path(dst), mode)
    digest = sha256_file(dst)
    if digest != sha:
        os.unlink(dst)
        raise MergeError(
            f"{where}: file {src} has sha256 {digest}, its index says {sha} (corrupt or "
            "modified); run qmgen verify on the source"
        )
    entry = dict(
        shard_id=new_id,
        file=rel,
        n_rows=n_rows,
        n_failures=n_failures,
        sha256=sha,
        size=os.stat(dst).st_size,
    )
    return how, entry


def _sync(manifest, dirs: set) -> None:
    """fsync the shard directories written since the last call (and ``shards/``), then
    the manifest lines naming their files."""
    for d in sorted(dirs | {os.path.dirname(p) for p in dirs}):
        if os.path.isdir(d):
            fsync(d, directory=True)
    dirs.clear()
    manifest.flush()
    os.fsync(manifest.fileno())


def _merged_attrs(loaded: list[dict], merged_from: list[dict]) -> dict:
    attrs = dict(loaded[0]["index"]["attrs"])
    for key in ("options_hash", "input", "merged_from"):
        attrs.pop(key, None)
    if isinstance(attrs.get("config"), dict):
        attrs["config"] = {k: v for k, v in attrs["config"].items() if k != "split"}
    flat = []
    for source, entry in zip(loaded, merged_from, strict=True):
        inner = source["index"]["attrs"].get("merged_from")
        if isinstance(inner, list):  # a merged source: keep its parts, shifted
            flat += [dict(m, first_shard=m["first_shard"] + entry["first_shard"]) for m in inner]
        else:
            flat.append(entry)
    devices: set[str] = set()
    for source in loaded:
        devices.update(source["index"]["attrs"].get("devices") or [])
    attrs.update(
        merged_from=flat,
        devices=sorted(devices),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        generator="qmgen merge",
    )
    return attrs


# ------------------------------------------------------------------ command line
def _cmd_merge(args) -> int:
    mode = "copy" if args.copy else "move" if args.move else "link"
    result = merge(args.out, args.sources, mode=mode, progress=args.progress)
    how = ", ".join(
        f"{result[f'n_{k}']} {k}ed" for k in ("link", "copy", "move") if result[f"n_{k}"]
    )
    kept = f", {result['n_kept']} kept from an interrupted merge" if result["n_kept"] else ""
    print(
        f"merged {len(args.sources)} datasets into {result['out_dir']}: {result['n_shards']} "
        f"shards ({how or 'none placed'}{kept}), {result['n_rows']} conformers, "
        f"{result['n_failures']} failure records; checksums verified, {result['wall_s']:.1f} s"
    )
    return 0


def register(subparsers) -> None:
    """Add the ``merge`` subcommand."""
    p = subparsers.add_parser(
        "merge", help="combine datasets of independent runs (e.g. --split parts) into one"
    )
    p.add_argument("out", help="new (or empty) output dataset directory")
    p.add_argument("sources", nargs="+", help="dataset directories, in the order of the rows")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--copy", action="store_true", help="copy shard files (default: hard link)")
    how.add_argument(
        "--move", action="store_true", help="move shard files (the sources lose their shards)"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_cmd_merge)
