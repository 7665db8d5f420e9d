"""`atri index`: build an index directory from a manifest or an audio folder, check
one, or fold its live changes into a new version (docs/index.md).

    atri index build --checkpoint C (--manifest M | --audio-dir D) --out INDEX_DIR [--factory STR]
                     [--vocabulary default|FILE.json] [--drop-live-changes]
    atri index validate INDEX_DIR
    atri index compact INDEX_DIR

Tests only: ATRI_TEST_STOP_AT=<step> stops the process (SIGSTOP) at that step of
publishing a version (index/layout.py PUBLISH_STEPS), so that a test can kill -9 it
exactly there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from atri.commands.common import BadInput, open_checkpoint, run_command
from atri.index import faiss_util, layout
from atri.index.build import build_index
from atri.index.errors import IndexStoreError
from atri.index.vocabulary import Vocabulary, VocabularyError, load_vocabulary
from atri.training.corpus.import_csv import AUDIO_SUFFIXES, clip_id
from atri.training.data.audio_io import AudioDecodeError
from atri.training.data.features import AUDIO_BATCH
from atri.training.data.manifest import ClipRecord, ManifestError, read_manifest
from atri.training.fileio import file_sha256

log = logging.getLogger(__name__)

STOP_ENV = "ATRI_TEST_STOP_AT"


def stop_hook(step: str | None) -> layout.StepHook | None:
    """Tests: a hook that stops this process (SIGSTOP) when publishing reaches `step`, after
    saying so on stderr; the test then kills it with SIGKILL."""
    if not step:
        return None
    if step not in layout.PUBLISH_STEPS:
        raise BadInput(f"{STOP_ENV}={step!r}: not one of {', '.join(layout.PUBLISH_STEPS)}")

    def hook(name: str) -> None:
        if name == step:
            print(f"stopped at {name}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    return hook


def manifest_records(path: Path) -> list[ClipRecord]:
    """The manifest's records with audio paths made absolute."""
    manifest = read_manifest(path)
    return [
        ClipRecord(r.id, str(manifest.audio_path(r).resolve()), r.captions, r.meta)
        for r in manifest
    ]


def audio_dir_records(folder: Path) -> list[ClipRecord]:
    """Every audio file below `folder`, no captions; the id is the relative path when it
    fits manifest.md's pattern, else a slug plus a short hash, the path kept in meta."""
    if not folder.is_dir():
        raise BadInput(f"--audio-dir {folder}: not a directory")
    records: list[ClipRecord] = []
    seen: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        cid = clip_id(rel)
        if cid in seen:
            raise BadInput(f"{rel} and {seen[cid]} map to the same clip id {cid!r}")
        seen[cid] = rel
        records.append(
            ClipRecord(cid, str(path.resolve()), {}, {} if cid == rel else {"path": rel})
        )
    if not records:
        raise BadInput(
            f"--audio-dir {folder}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})"
        )
    return records


def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def manifest_source(manifest: Path) -> tuple[list[ClipRecord], dict[str, str]]:
    """A manifest's records and the meta.json "source" naming it; BadInput if unreadable."""
    try:
        records = manifest_records(manifest)
    except ManifestError as exc:
        raise BadInput(str(exc)) from exc
    return records, {"manifest": str(manifest.resolve()), "manifest_sha256": file_sha256(manifest)}


def index_records(
    checkpoint: str,
    records: list[ClipRecord],
    source: dict[str, str],
    out: Path,
    *,
    factory: str | None = None,
    batch_size: int = AUDIO_BATCH,
    vocabulary: Vocabulary | None = None,
    drop_live_changes: bool = False,
    on_step: layout.StepHook | None = None,
) -> int:
    """build_index with the model of `checkpoint`, meta.json naming it and `source`;
    returns the version published. `drop_live_changes`, `on_step`: build_index's."""
    if not records:
        raise BadInput(f"{source}: no clips")
    if batch_size < 1:
        raise BadInput("--batch-size must be at least 1")
    model, info = open_checkpoint(checkpoint)
    if factory is not None:
        try:
            faiss_util.new_index(factory, int(model.config.embed_dim))
        except RuntimeError as exc:
            raise BadInput(f"--factory {factory!r}: FAISS cannot build it ({exc})") from exc
    entry = {
        "path": checkpoint if checkpoint == "default" else str(Path(checkpoint).resolve()),
        "info": _json_safe(info),
    }
    return build_index(model, records, out, factory=factory, audio_batch=batch_size,
                       meta={"checkpoint": entry, "source": source}, vocabulary=vocabulary,
                       drop_live_changes=drop_live_changes, on_step=on_step)


def build(args: argparse.Namespace) -> int:
    if args.manifest is not None:
        records, source = manifest_source(args.manifest)
    else:
        records = audio_dir_records(args.audio_dir)
        source = {"audio_dir": str(args.audio_dir.resolve())}
    vocabulary = _vocabulary(args.vocabulary)
    on_step = stop_hook(os.environ.get(STOP_ENV))
    version = index_records(args.checkpoint, records, source, args.out, factory=args.factory,
                            batch_size=args.batch_size, vocabulary=vocabulary,
                            drop_live_changes=args.drop_live_changes, on_step=on_step)
    labels = f" and {vocabulary.name} vocabulary labels" if vocabulary else ""
    print(f"{args.out}: version {version} with {len(records)} clips{labels}")
    return 0


def _vocabulary(spec: str | None) -> Vocabulary | None:
    """The --vocabulary, read before the model loads: a bad file fails fast (exit 2)."""
    if spec is None:
        return None
    try:
        return load_vocabulary(spec)
    except VocabularyError as exc:
        raise BadInput(str(exc)) from exc


def validate(args: argparse.Namespace) -> int:
    from atri.index.validate import validate as check

    problems = check(args.index)
    for problem in problems:
        print(problem)
    print(f"{args.index}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def compact(args: argparse.Namespace) -> int:
    from atri.index.store import IndexStore

    on_step = stop_hook(os.environ.get(STOP_ENV))
    store = IndexStore.open(args.index)
    before = store.version
    version = store.compact(on_step=on_step)
    print(
        f"{args.index}: version {version}" + (" (nothing to compact)" if version == before else "")
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atri index", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="embed clips and captions into an index directory")
    b.add_argument("--checkpoint", required=True, help="checkpoint directory or 'default'")
    source = b.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="manifest .jsonl (clips and captions)")
    source.add_argument("--audio-dir", type=Path, help="index every audio file below this folder")
    b.add_argument("--out", type=Path, required=True, help="index directory")
    b.add_argument("--factory", help="FAISS factory string (default: chosen by size)")
    b.add_argument("--batch-size", type=int, default=AUDIO_BATCH, help="clips per forward")
    b.add_argument(
        "--vocabulary",
        metavar="default|FILE",
        help="add labels to the caption index so that uploads are labelled in every "
        "language: 'default' (the concept lexicon, 8 languages) or a JSON file "
        "{lang: [label, ...]}",
    )
    b.add_argument(
        "--drop-live-changes",
        action="store_true",
        help="when --out is served, discard the clips added and deleted through the service "
        "since the version replaced (by default they are carried into the new version)",
    )
    b.set_defaults(run=build)
    v = sub.add_parser("validate", help="check an index directory")
    v.add_argument("index", type=Path)
    v.set_defaults(run=validate)
    c = sub.add_parser("compact", help="fold live changes into a new version")
    c.add_argument("index", type=Path)
    c.set_defaults(run=compact)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(
        build_parser(), lambda args: args.run(args), argv,
        {AudioDecodeError: 2, IndexStoreError: 1},
        name=lambda args: f"atri index {args.command}",
    )
