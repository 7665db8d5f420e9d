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

from atri.training.languages import LANGS

pytestmark = pytest.mark.slow

def _missed(reason: str) -> pytest.MarkDecorator:
    # strict: the day the model finds it, this fails and the model card must be updated
    return pytest.mark.xfail(strict=True, reason=f"the default checkpoint misses it: {reason}")


# (query, language, concept, material or None): the four queries; three are misses
# of the shipped model (ranks of the first matching recording recorded in docs/model_card.md)
QUERIES = [
    pytest.param("dog barking", "eng", "dog_bark", None,
                 marks=_missed("a sneeze, a cawing crow and a honking goose rank above the dog "
                               "(rank 4)")),
    pytest.param("verre brisé", "fra", "glass_break", None,
                 marks=_missed("a metal hit and glass clinking first, the breaking glass 20th")),
    ("雷声", "zho", "thunder", None),
    pytest.param("Schritte im Schnee", "deu", "footsteps", "snow",
                 marks=_missed("cloth rustling ranks above footsteps on snow (rank 4)")),
]
LABEL_SAMPLE = 4  # every 4th recording of the split is uploaded for labels
LABEL_TOP = 5


@pytest.fixture(scope="module")
def real_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atri.commands.corpus import main

    out = tmp_path_factory.mktemp("corpus-sfx")
    assert main(["build-sfx", str(out), "--workers", "2"]) == 0
    return out / "test.jsonl"


@pytest.fixture(scope="module")
def client(real_test: Path, tmp_path_factory, make_client, make_settings) -> Iterator[TestClient]:
    from atri.commands.index import main

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
def test_real_recordings_get_their_own_label(client, real_test, lang):
    """Every 4th real recording of the split (those the API accepts), uploaded as a user
    would: its concept's label is among the top 5 labels of the vocabulary in that
    language for at least 5x the share chance gives (5 of ~345 labels: 1.4%). Measured
    on all 302 recordings of builder version 5: 31-37% (model card)."""
    from atri.training.corpus.sfx.lexicon import label, vocabulary
    from atri.training.data.manifest import read_manifest

    manifest = read_manifest(real_test)
    # the corpus keeps clicks from 50 ms; the API refuses uploads under 0.1 s (api.md)
    recordings = [r for r in manifest if "package" in r.meta][::LABEL_SAMPLE]
    recordings = [r for r in recordings if float(r.meta["seconds"]) >= 0.1]
    hits = 0
    for record in recordings:
        upload = (Path(record.audio).name, manifest.audio_path(record).read_bytes())
        response = client.post("/search/audio", files={"file": upload},
                               data={"lang": lang, "k": 40})
        assert response.status_code == 200, response.text
        labels = [c["text"] for c in response.json()["captions"]
                  if c["source"] == "vocabulary"][:LABEL_TOP]
        hits += label(str(record.meta["concept"]), lang) in labels
    chance = LABEL_TOP / len(vocabulary(lang))
    assert hits / len(recordings) >= 5 * chance, (hits, len(recordings))
