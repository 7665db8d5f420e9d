"""What a user finds among real recordings (issue 11, "done when"): the real-recordings
corpus built from the Debian packages, its `test` split (recordings never trained on)
indexed with the shipped default checkpoint and the default label vocabulary, searched
through the HTTP API as a person would type, and a real recording uploaded for labels.

Slow: it builds the real corpus (fetching and extracting the packages unless
~/.cache/atri/sfx-root already holds them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from atri.training.corpus.schema import LANGS

pytestmark = pytest.mark.slow

# (query, language, concept, material or None): the four queries
QUERIES = [
    ("dog barking", "eng", "dog_bark", None),
    ("verre brisé", "fra", "glass_break", None),
    ("雷声", "zho", "thunder", None),
    ("Schritte im Schnee", "deu", "footsteps", "snow"),
]


@pytest.fixture(scope="module")
def real_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atri.training.corpus.cli import main

    out = tmp_path_factory.mktemp("corpus-sfx")
    assert main(["build-sfx", str(out), "--workers", "2"]) == 0
    return out / "test.jsonl"


@pytest.fixture(scope="module")
def client(real_test: Path, tmp_path_factory, make_client, make_settings) -> Iterator[TestClient]:
    from atri.index.cli import main

    index = tmp_path_factory.mktemp("real-index") / "idx"
    assert main(["build", "--checkpoint", "default", "--manifest", str(real_test),
                 "--vocabulary", "default", "--out", str(index)]) == 0
    with make_client(make_settings(index)) as test_client:
        yield test_client


def matches(meta: dict, concept: str, material: str | None) -> bool:
    """A recording of the concept, or a mixture whose foreground is one."""
    attrs = str(meta.get("attrs", ""))
    return meta.get("concept") == concept and (material is None or f"material={material}" in attrs)


@pytest.mark.parametrize(("query", "lang", "concept", "material"), QUERIES)
def test_a_typed_query_finds_a_matching_recording_first(client, query, lang, concept, material):
    response = client.get("/search", params={"q": query, "lang": lang, "k": 5})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    first = client.get(f"/clips/{results[0]['id']}").json()
    assert matches(first["meta"], concept, material), [r["caption"] for r in results]


@pytest.mark.parametrize("lang", LANGS)
def test_a_real_recording_is_labelled_in_every_language(client, real_test, lang):
    """A thunder recording of the test split, uploaded: its language's thunder label is
    among the top 5 labels."""
    from atri.training.corpus.sfx.lexicon import CONCEPTS, label
    from atri.training.manifest import read_manifest

    manifest = read_manifest(real_test)
    thunder = next(r for r in manifest if r.meta.get("concept") == "thunder")
    upload = ("thunder.flac", manifest.audio_path(thunder).read_bytes())
    response = client.post("/search/audio", files={"file": upload}, data={"lang": lang, "k": 5})
    assert response.status_code == 200, response.text
    texts = [c["text"] for c in response.json()["captions"] if c["source"] == "vocabulary"]
    assert "thunder" in CONCEPTS and label("thunder", lang) in texts, texts
