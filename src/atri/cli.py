"""The `atri` console script: one small dispatcher that imports each subcommand lazily,
so `atri --help` stays fast and the packages keep their one-way imports."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module exposing `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "corpus": ("atri.commands.corpus", "build a corpus, import CSVs, print caption tables"),
    "train": ("atri.commands.train", "train a model: mlclap, mlclap-mixture, cacl, kcl, ..."),
    "eval": ("atri.commands.eval", "evaluate a checkpoint: metrics.json, report.md"),
    "embed": ("atri.commands.embed", "export audio or text embeddings to .npz"),
    "index": ("atri.commands.index", "build, validate or compact a search index"),
    "milvus-sync": ("atri.commands.milvus", "fill Milvus collections from an index directory"),
    "serve": ("atri.commands.serve", "start the HTTP search service"),
    "demo": ("atri.commands.demo", "small corpus, index and service on :8000, default model"),
}

USAGE = "usage: atri COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(
    f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] == "--version":
        from atri import __version__

        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"atri: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest))
