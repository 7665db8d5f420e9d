"""`atri corpus build`, `atri corpus build-sfx`, `atri corpus import-csv` (shared spec
cli.md) and `atri corpus captions [samples|instruments]` (the tables docs/corpus.md embeds)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from atri.commands.common import run_command
from atri.training.data.manifest import ManifestError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atri corpus")
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="render the demo corpus (shared spec corpus.md)")
    build.add_argument("out_dir", type=Path)
    build.add_argument("--size", choices=("tiny", "small", "default"), default="small")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    build.add_argument("--train-soundfonts", default="fluidr3", metavar="A,B,...",
                       help="soundfonts the train clips are rendered with, one drawn per "
                            "clip among those that have its sounds: fluidr3, musescore, "
                            "fluidr3mono, opl3, freepats (default fluidr3)")
    build.add_argument("--val-soundfont", default=None, metavar="NAME",
                       help="also render the val clips with NAME, a soundfont no train clip "
                            "uses, as the val-xfont split (validation for cross-soundfont "
                            "transfer): musescore, fluidr3mono or opl3")
    sfx = sub.add_parser("build-sfx", help="the real-recordings corpus from Debian packages")
    sfx.add_argument("out_dir", type=Path)
    sfx.add_argument("--root", type=Path, default=None,
                     help="an extracted package tree (default: fetch and extract into "
                          "~/.cache/atri/sfx-root)")
    sfx.add_argument("--tables", type=Path, default=None,
                     help="folder of <package>.tsv tables (default: the committed ones)")
    sfx.add_argument("--seed", type=int, default=0)
    sfx.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    sfx.add_argument("--eval-captions", choices=("per-meaning", "per-clip"), default="per-meaning",
                     help="test splits: recordings of one concept and attributes share their "
                          "captions (per-meaning, default) or each draws its own (per-clip, "
                          "builder version 5)")
    imp = sub.add_parser("import-csv", help="AudioCaps/Clotho CSVs (+ translations) to a manifest")
    imp.add_argument("--format", choices=("audiocaps", "clotho"), required=True)
    imp.add_argument("--csv", type=Path, required=True)
    imp.add_argument("--audio-dir", type=Path, required=True)
    imp.add_argument("--translation", action="append", default=[], metavar="LANG=F")
    imp.add_argument("--out", type=Path, required=True)
    tables = sub.add_parser("captions", help="print the caption tables docs/corpus.md embeds")
    tables.add_argument("table", nargs="?", choices=("samples", "instruments"),
                        default="samples")
    return parser


def _translations(items: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        lang, sep, path = item.partition("=")
        if not sep or not lang or not path:
            raise ValueError(f"--translation {item!r}: expected LANG=FILE")
        if lang in out:
            raise ValueError(f"--translation {lang}: given twice")
        out[lang] = Path(path)
    return out


def _build_sfx(args: argparse.Namespace) -> None:
    from atri.training.corpus.sfx.build import build_sfx, format_statistics
    from atri.training.corpus.sfx.sources import TABLES_DIR

    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    root = args.root
    if root is None:
        from atri.training.corpus.sfx.extract import default_cache_dir, extract_all
        from atri.training.corpus.sfx.packages import PACKAGES

        cache = default_cache_dir(os.environ)
        root = cache.parent / "sfx-root"
        extract_all(sorted(PACKAGES), root, cache)
    stats = build_sfx(args.out_dir, root, table_dir=args.tables or TABLES_DIR, seed=args.seed,
                      workers=args.workers, eval_captions=args.eval_captions)
    print(format_statistics(stats))
    print(f"real-recordings corpus (seed {args.seed}) in {args.out_dir} "
          f"[built in {stats['build_seconds']:.1f} s]")


def run(args: argparse.Namespace) -> int:
    if args.action == "captions":
        from atri.training.corpus.captions import instrument_table, sample_table

        print(instrument_table() if args.table == "instruments" else sample_table())
    elif args.action == "build-sfx":
        _build_sfx(args)
    elif args.action == "build":
        from atri.training.corpus.build import build, format_statistics

        if args.workers < 1:
            raise ValueError("--workers must be at least 1")
        start = time.monotonic()
        fonts = [name.strip() for name in args.train_soundfonts.split(",") if name.strip()]
        stats = build(args.out_dir, size=args.size, seed=args.seed, workers=args.workers,
                      train_soundfonts=fonts, val_soundfont=args.val_soundfont)
        print(format_statistics(stats))
        print(f"corpus {args.size} (seed {args.seed}) in {args.out_dir} "
              f"[{time.monotonic() - start:.1f} s]")
    else:
        from atri.training.corpus.import_csv import import_csv

        records = import_csv(args.format, args.csv, args.audio_dir,
                             _translations(args.translation), args.out)
        print(f"wrote {len(records)} clips to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    errors = {ValueError: 2, ManifestError: 2, FileNotFoundError: 2}
    return run_command(build_parser(), run, argv, errors)
