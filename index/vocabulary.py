"""Label vocabularies for the caption index (`atri index build --vocabulary`, docs/index.md).

A vocabulary is a list of short labels per language ("dog barking", "chien qui aboie",
"犬の鳴き声") added to the caption index as captions of no clip, so audio-to-text search
labels an upload in every language even when the indexed clips have no captions (an
`--audio-dir` index). `default` is the concept lexicon of the real-recordings corpus
(training/corpus/sfx/lexicon.py); anything else is a JSON file `{lang: [label, ...]}`.
meta.json records the vocabulary's name, a hash of its labels and their count per
language, so a served index says which labels it answers with.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atri.index.errors import IndexStoreError
from atri.training.languages import LANGS

DEFAULT = "default"
MAX_LABEL_CHARS = 1000  # the service refuses longer queries: a label is a short phrase


class VocabularyError(IndexStoreError, ValueError):
    """A vocabulary that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Vocabulary:
    name: str  # "default", or the file's absolute path
    labels: dict[str, list[str]]  # language -> distinct labels, in LANGS order

    @property
    def sha256(self) -> str:
        """Hash of the labels themselves (not of the file): two files with the same
        labels give the same hash, and a changed lexicon a new one."""
        canonical = json.dumps(self.labels, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def meta(self) -> dict[str, Any]:
        """The meta.json entry: {"name", "sha256", "labels": {lang: count}}."""
        counts = {lang: len(labels) for lang, labels in self.labels.items()}
        return {"name": self.name, "sha256": self.sha256, "labels": counts}


def load_vocabulary(spec: str | Path) -> Vocabulary:
    """`default` (the concept lexicon) or a JSON file {lang: [labels]}. Raises
    VocabularyError naming the file and field."""
    if str(spec) == DEFAULT:
        return default_vocabulary()
    return read_vocabulary(Path(spec))


def default_vocabulary() -> Vocabulary:
    """The lexicon's label-style captions in all 8 languages."""
    # Imported here: the lexicon reads its data files on import, which only builds need.
    from atri.training.corpus.sfx.lexicon import vocabulary

    where = f"{DEFAULT} vocabulary (training/corpus/sfx/lexicon.py)"
    return Vocabulary(
        DEFAULT, {lang: _labels(vocabulary(lang), f"{where}: {lang}") for lang in LANGS}
    )


def read_vocabulary(path: Path) -> Vocabulary:
    """A JSON object of language codes (ISO 639-3, LANGS) to non-empty lists of labels."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise VocabularyError(f"--vocabulary {path}: not found (or give 'default')") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"--vocabulary {path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise VocabularyError(f"{path}:{exc.lineno}: bad JSON: {exc.msg}") from exc
    if not isinstance(obj, dict) or not obj:
        raise VocabularyError(
            f"{path}: expected a JSON object {{language: [label, ...]}}, got "
            f"{type(obj).__name__ if obj else 'an empty one'}"
        )
    labels: dict[str, list[str]] = {}
    for lang, values in obj.items():
        if lang not in LANGS:
            raise VocabularyError(
                f"{path}: field {lang!r}: not a language code (one of {' '.join(LANGS)})"
            )
        labels[lang] = _labels(values, f"{path}: field {lang!r}")
    return Vocabulary(str(path.resolve()), {lang: labels[lang] for lang in LANGS if lang in labels})


def _labels(values: Any, where: str) -> list[str]:
    """Distinct labels, NFKC-normalised and stripped as the service treats query text."""
    if not isinstance(values, list) or not values:
        raise VocabularyError(f"{where}: expected a non-empty list of strings")
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise VocabularyError(f"{where}[{i}]: expected a non-empty string, got {value!r}")
        if len(value) > MAX_LABEL_CHARS:
            raise VocabularyError(f"{where}[{i}]: longer than {MAX_LABEL_CHARS} characters")
        out.append(unicodedata.normalize("NFKC", value).strip())
    return list(dict.fromkeys(out))
