"""The real-recordings ablation of issue 11 ("training text is the bottleneck"): what the heads
are trained on, judged on real recordings never seen in training.

Every arm trains the default heads (frozen aisfx + e5-small) with `atri train` and is scored
with `atri eval` on the real splits (`test`: seen concepts, unseen recordings; `test-xpkg`:
whole packages held out; `test-zeroshot`: concepts never trained on) and, where the arm
touches the demo corpus, on the demo `test` and `test-xfont` splits. Arms:

    filename-eng   English captions cut from the file names (meta.filename_label), mlclap
    lexicon-eng    the lexicon's captions, English only, mlclap
    lexicon-8      the lexicon's captions in 8 languages, kcl-balanced
    lexicon-8-nomix  the same without the mixture clips (mix-*, mel-*)
    lexicon-8-lit  the text side locked (LiT: --text-head identity, 384-d), audio dropout 0.2
    lexicon-8-aug  lexicon-8 with 2 augmented audio views per clip
    demo-fluidr3   demo train clips (FluidR3 only), kcl-balanced: the soundfont baseline
    demo-4fonts    the same clips rendered with 4 soundfonts (--train-soundfonts)
    demo-aug       demo-fluidr3 with 2 augmented views
    joint-rN       demo + real train (real clips repeated N times), started from the previous
                   default checkpoint: candidates for the new default
    joint-fonts-rN the same plus the demo clips rendered with other soundfonts (--fonts: the
                   demo corpus built with --train-soundfonts, repeatable; its first --n-fonts
                   clips, those rendered with --fonts-soundfonts if given, never its FluidR3
                   ones, which demo/train already holds)

--val-xfont adds the demo corpus's val-xfont split (`atri corpus build --val-soundfont`) to
the validation data of every arm whose validation holds the demo val split.

    python scripts/sfx_study.py --sfx data/corpus-sfx --demo data/demo-sub \\
        --fonts data/corpus-small-sf --out data/sfx-study [--arms a,b,...] [--seed N]
    python scripts/sfx_study.py summarise data/sfx-study data/sfx-study-seed1 ...

Writes OUT/<arm>/run (the run), OUT/<arm>/eval-<split>/metrics.json, OUT/results.json and
prints a markdown table (averages over the 8 languages). `--manifests-only` writes only the
manifests (OUT/manifests/<corpus>-<split>.jsonl and each arm's OUT/<arm>/{train,val}.jsonl)
and trains nothing: the data of a run made elsewhere, e.g. the default's stage 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from atri.training.data.manifest import ClipRecord, read_manifest, write_manifest
from atri.training.fileio import atomic_write_text
from atri.training.languages import LANGS

ATRI = str(Path(sys.executable).parent / "atri")
REAL_SPLITS = ("test", "test-xpkg", "test-zeroshot")
DEMO_SPLITS = ("test", "test-xfont")
Transform = Callable[[list[ClipRecord]], list[ClipRecord]]


def absolute(records: list[ClipRecord], root: Path) -> list[ClipRecord]:
    for r in records:
        r.audio = str((root / r.audio).resolve())
    return records


def filename_captions(records: list[ClipRecord]) -> list[ClipRecord]:
    """Single recordings only (a mixture has no file name), one English caption each."""
    return [ClipRecord(id=r.id, audio=r.audio, captions={"eng": [r.meta["filename_label"]]},
                       meta=r.meta) for r in records if "filename_label" in r.meta]


def no_mixtures(records: list[ClipRecord]) -> list[ClipRecord]:
    return [r for r in records if not r.id.startswith(("mix-", "mel-"))]


def english_only(records: list[ClipRecord]) -> list[ClipRecord]:
    return [ClipRecord(id=r.id, audio=r.audio, captions={"eng": r.captions["eng"]},
                       meta=r.meta) for r in records]


def repeated(records: list[ClipRecord], n: int) -> list[ClipRecord]:
    """Each record n times under distinct ids: the features are cached by file, so a repeat
    costs nothing but weighs the clip n times per epoch."""
    return [ClipRecord(id=f"{r.id}.r{k}" if k else r.id, audio=r.audio, captions=r.captions,
                       meta=r.meta) for k in range(n) for r in records]


@dataclass(frozen=True)
class Arm:
    name: str
    train: Callable[[dict[str, list[ClipRecord]]], list[ClipRecord]]
    val: Callable[[dict[str, list[ClipRecord]]], list[ClipRecord]]
    flags: tuple[str, ...] = ()
    evals: tuple[tuple[str, str], ...] = field(default=tuple(("sfx", s) for s in REAL_SPLITS))


def _real(split: str, transform: Transform | None = None) -> Callable:
    return lambda d: (transform or list)(list(d[f"sfx/{split}"]))


def _demo_evals() -> tuple[tuple[str, str], ...]:
    return tuple(("demo", s) for s in DEMO_SPLITS)


KCLB = ("--strategy", "kcl-balanced")
ARMS: dict[str, Arm] = {a.name: a for a in (
    Arm("filename-eng", _real("train", filename_captions), _real("val", filename_captions),
        ("--strategy", "mlclap", "--langs", "eng")),
    Arm("lexicon-eng", _real("train", english_only), _real("val", english_only),
        ("--strategy", "mlclap", "--langs", "eng")),
    Arm("lexicon-8", _real("train"), _real("val"), KCLB),
    Arm("lexicon-8-nomix", _real("train", no_mixtures), _real("val"), KCLB),
    Arm("lexicon-8-lit", _real("train"), _real("val"),
        (*KCLB, "--text-head", "identity", "--embed-dim", "384", "--audio-dropout", "0.2")),
    Arm("lexicon-8-aug", _real("train"), _real("val"), (*KCLB, "--augment-views", "2")),
    Arm("demo-fluidr3", lambda d: d["demo/train"], lambda d: d["demo/val"], KCLB,
        _demo_evals()),
    Arm("demo-4fonts", lambda d: d["fonts/train"], lambda d: d["demo/val"], KCLB,
        _demo_evals()),
    Arm("demo-aug", lambda d: d["demo/train"], lambda d: d["demo/val"],
        (*KCLB, "--augment-views", "2"), _demo_evals()),
    *(Arm(f"joint-r{n}", lambda d, n=n: d["demo/train"] + repeated(d["sfx/train"], n),
          lambda d: d["demo/val"] + d["sfx/val"], (*KCLB, "--init-from", "default"),
          tuple(("sfx", s) for s in REAL_SPLITS) + _demo_evals()) for n in (1, 2, 3)),
    *(Arm(f"joint-fonts-r{n}",
          lambda d, n=n: d["demo/train"] + d["fonts/train"] + repeated(d["sfx/train"], n),
          lambda d: d["demo/val"] + d["sfx/val"], (*KCLB, "--init-from", "default"),
          tuple(("sfx", s) for s in REAL_SPLITS) + _demo_evals()) for n in (1, 2, 3)),
)}


def load_data(sfx: Path, demo: Path, fonts: Sequence[Path], n_fonts: int,
              fonts_soundfonts: set[str] | None = None, val_xfont: bool = False) -> dict:
    data = {}
    for split in ("train", "val", *REAL_SPLITS):
        data[f"sfx/{split}"] = absolute(read_manifest(sfx / f"{split}.jsonl").records, sfx)
    for split in ("train", "val", *DEMO_SPLITS):
        data[f"demo/{split}"] = absolute(read_manifest(demo / f"{split}.jsonl").records, demo)
    if val_xfont:  # validation that hears a soundfont no training clip uses
        extra = absolute(read_manifest(demo / "val-xfont.jsonl").records, demo)
        data["demo/val"] = data["demo/val"] + extra
    if fonts:  # the same first clips as demo/train, other soundfonts
        data["fonts/train"] = []
        seen: dict[str, Path] = {}
        for corpus in fonts:
            records = absolute(read_manifest(corpus / "train.jsonl").records[:n_fonts], corpus)
            # FluidR3 renderings are demo/train's own clips (the renderer is deterministic)
            records = [r for r in records if r.meta.get("soundfont") != "fluidr3"]
            if fonts_soundfonts is not None:  # e.g. leave out the one val-xfont renders with
                records = [r for r in records if r.meta.get("soundfont") in fonts_soundfonts]
            for r in records:  # the same ids as the FluidR3 renderings of demo/train
                r.id = f"{r.id}.{r.meta.get('soundfont', 'sf')}"
                if r.id in seen:
                    raise ValueError(f"--fonts {seen[r.id]} and {corpus} both hold {r.id}: "
                                     "give each soundfont's clips once")
                seen[r.id] = corpus
            data["fonts/train"] += records
    return data


def write_arm_manifests(arm: Arm, data: dict, out: Path) -> Path:
    folder = out / arm.name
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in (("train", arm.train(data)), ("val", arm.val(data))):
        write_manifest(folder / f"{name}.jsonl", records)
        print(f"{folder / name}.jsonl: {len(records)} clips", flush=True)
    return folder


def eval_report(checkpoint: str, manifest: Path, report: Path) -> dict:
    """`atri eval`'s metrics.json for the pair, run only when `report` does not hold it."""
    if not (report / "metrics.json").is_file():
        subprocess.run([ATRI, "eval", "--checkpoint", checkpoint, "--manifest", str(manifest),
                        "--out", str(report)], check=True)
    return json.loads((report / "metrics.json").read_text())


def run_arm(arm: Arm, data: dict, out: Path, common: list[str], init_from: str) -> dict:
    flags = [init_from if flag == "default" and before == "--init-from" else flag
             for before, flag in zip(("", *arm.flags), arm.flags, strict=False)]
    folder = write_arm_manifests(arm, data, out)
    run = folder / "run"
    if not (run / "best").is_dir():
        subprocess.run([ATRI, "train", "--train", str(folder / "train.jsonl"), "--val",
                        str(folder / "val.jsonl"), "--out", str(run), *common, *flags],
                       check=True)
    results = {f"{corpus}/{split}": eval_report(str(run / "best"),
                                                 out / "manifests" / f"{corpus}-{split}.jsonl",
                                                 folder / f"eval-{corpus}-{split}")
               for corpus, split in arm.evals}
    best = json.loads((run / "best" / "checkpoint.json").read_text())
    return {"epoch": best["epoch"], "val_score": best["metrics"]["val_score"], "eval": results}


def chance_recall(records: list[ClipRecord], k: int) -> float:
    """Expected T2A R@k (percent) of a random ranking under the metrics.md query rule: one
    query per distinct caption string and language, relevant = every clip carrying it."""
    n, values = len(records), []
    for lang in LANGS:
        carriers: dict[str, set[str]] = {}
        for r in records:
            for caption in r.captions.get(lang, []):
                carriers.setdefault(caption, set()).add(r.id)
        for clips in carriers.values():
            miss = 1.0
            for i in range(k):  # P(no relevant clip among the first k of a random order)
                miss *= max(0, n - len(clips) - i) / (n - i)
            values.append(1 - miss)
    return 100 * sum(values) / len(values)


def row(name: str, result: dict) -> str:
    cells = []
    for key in ("sfx/test", "sfx/test-xpkg", "sfx/test-zeroshot", "demo/test", "demo/test-xfont"):
        m = result["eval"].get(key)
        cells += (["", ""] if m is None else
                  [f"{m['t2a']['avg']['R@1']:.1f}", f"{m['t2a']['avg']['R@10']:.1f}"])
    return f"| {name} | {result['epoch']} | " + " | ".join(cells) + " |"


def table(results: dict) -> str:
    head = ("| arm | best epoch | test R@1 | test R@10 | xpkg R@1 | xpkg R@10 | zeroshot R@1 | "
            "zeroshot R@10 | demo test R@1 | demo R@10 | demo xfont R@1 | xfont R@10 |")
    rule = "|" + "---|" * 12
    return "\n".join([head, rule, *(row(n, r) for n, r in results.items())])


KEYS = ("sfx/test", "sfx/test-xpkg", "sfx/test-zeroshot", "demo/test", "demo/test-xfont")


def summarise(folders: list[Path]) -> str:
    """Mean ± std over the seeds (one study folder, or its results.json, per seed) of T2A
    R@1 / R@10, 8-language averages, for every arm that all of them hold."""
    runs = [json.loads((f / "results.json" if f.is_dir() else f).read_text()) for f in folders]
    arms = [a for a in runs[0] if all(a in r for r in runs)]
    lines = ["| arm | seeds | " + " | ".join(f"{k} R@1 | {k} R@10" for k in KEYS) + " |",
             "|---" * (2 + 2 * len(KEYS)) + "|"]
    for arm in arms:
        cells = []
        for key in KEYS:
            for metric in ("R@1", "R@10"):
                values = [r[arm]["eval"][key]["t2a"]["avg"][metric] for r in runs
                          if key in r[arm]["eval"]]
                cells.append(f"{statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f}"
                             if values else "")
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["summarise"]:  # summarise STUDY_DIR... (one per seed)
        print(summarise([Path(a) for a in argv[1:]]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sfx", type=Path, required=True)
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--fonts", type=Path, action="append", default=[],
                        help="a demo corpus built with --train-soundfonts (repeatable)")
    parser.add_argument("--n-fonts", type=int, default=None,
                        help="the first N training clips of --fonts (default: as many as the "
                             "demo corpus's training split holds)")
    parser.add_argument("--fonts-soundfonts", default=None, metavar="A,B",
                        help="of those clips, only the ones rendered with these soundfonts")
    parser.add_argument("--val-xfont", action="store_true",
                        help="validate on the demo val split and its val-xfont copy (in the "
                             "--demo folder: `atri corpus build --val-soundfont`)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", default="", help="more `atri train` flags for every arm")
    parser.add_argument("--init-from", default="default",
                        help="checkpoint the joint arms continue from (default: the shipped one, "
                             "which trained aisfx's top two blocks: add --extra "
                             "'--audio-trainable-blocks 2')")
    parser.add_argument("--manifests-only", action="store_true",
                        help="write the manifests of the corpora and the arms, train nothing")
    args = parser.parse_args(argv)
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {unknown}; known: {', '.join(ARMS)}")
    arms = [ARMS[a] for a in args.arms.split(",")]
    n_fonts = args.n_fonts
    if n_fonts is None:
        n_fonts = len(read_manifest(args.demo / "train.jsonl"))
    if n_fonts < 1:
        parser.error(f"--n-fonts {n_fonts}: must be at least 1")
    if args.val_xfont and not (args.demo / "val-xfont.jsonl").is_file():
        parser.error(f"--val-xfont: {args.demo / 'val-xfont.jsonl'} does not exist; build the "
                     "demo corpus with --val-soundfont")
    kept = None if args.fonts_soundfonts is None else set(args.fonts_soundfonts.split(","))
    try:
        data = load_data(args.sfx, args.demo, args.fonts, n_fonts, kept, args.val_xfont)
    except ValueError as err:
        parser.error(str(err))
    (args.out / "manifests").mkdir(parents=True, exist_ok=True)
    for key, records in data.items():
        write_manifest(args.out / "manifests" / f"{key.replace('/', '-')}.jsonl", records)
    if args.manifests_only:
        for arm in arms:
            write_arm_manifests(arm, data, args.out)
        return 0
    common = ["--epochs", str(args.epochs), "--seed", str(args.seed), *args.extra.split()]
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for arm in arms:
        results[arm.name] = run_arm(arm, data, args.out, common, args.init_from)
        atomic_write_text(results_file, json.dumps(results, indent=1))
        print(table({arm.name: results[arm.name]}), flush=True)
    print(table(results))
    for key in ("sfx/test", "sfx/test-xpkg", "sfx/test-zeroshot"):
        print(f"chance {key}: R@1 {chance_recall(data[key], 1):.2f}, "
              f"R@10 {chance_recall(data[key], 10):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
