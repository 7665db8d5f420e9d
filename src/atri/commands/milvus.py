"""`atri milvus-sync INDEX_DIR [--uri URI] [--prefix P] [--index-type T] [--replace | --merge]`:
fill Milvus collections from an index directory (index/milvus_sync.py, docs/scaling.md).
The URI, prefix and token default to the service's settings (ATRI_MILVUS_URI,
ATRI_MILVUS_PREFIX, ATRI_MILVUS_TOKEN); the token never comes from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from atri.commands.common import BadInput, run_command
from atri.index.errors import IndexStoreError
from atri.index.milvus import INDEX_TYPES
from atri.index.milvus_sync import sync_index
from atri.service.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atri milvus-sync",
        description="fill Milvus collections from an index directory (docs/scaling.md)",
    )
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--uri", help="a milvus-lite *.db file or a server (default: "
                        "$ATRI_MILVUS_URI)")
    parser.add_argument("--prefix", help="collection name prefix (default: $ATRI_MILVUS_PREFIX "
                        f"or {Settings.model_fields['milvus_prefix'].default})")
    parser.add_argument("--index-type", choices=sorted(INDEX_TYPES))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true", help="drop the collections first")
    mode.add_argument("--merge", action="store_true", help="add a shard, delete nothing")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise BadInput(f"bad setting: {exc}") from exc
    uri = args.uri or settings.milvus_uri
    if not uri:
        raise BadInput("pass --uri or set ATRI_MILVUS_URI")
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    meta = sync_index(args.index_dir, uri, args.prefix or settings.milvus_prefix, token=token,
                      index_type=args.index_type, replace=args.replace, merge=args.merge)
    print(json.dumps(meta["milvus"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv, {IndexStoreError: 2, OSError: 2,
                                               ValueError: 2}, log_format="%(message)s")
