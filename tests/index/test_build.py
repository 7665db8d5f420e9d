"""`atri index build`: the index directory, resumable embedding, kinds and tuning, the
GPU guard, --audio-dir ids, and one build with the real model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from atri.commands import index as cli
from atri.commands.index import manifest_records
from atri.index import faiss_util
from atri.index.build import build_index
from atri.index.store import IndexStore
from atri.index.validate import validate
from atri.index.version import CaptionSource, write_version
from atri.training.data.manifest import read_manifest, write_manifest

SHARED = "A shared caption, carried by six clips."


@pytest.fixture(scope="module")
def manifest(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus's val split, with one English caption shared by clips 0-5."""
    records = read_manifest(tiny_corpus / "val.jsonl").records
    for record in records[:6]:
        record.captions["eng"][1] = SHARED
    path = tiny_corpus / "val-shared.jsonl"
    write_manifest(path, records)
    return path


def run_build(monkeypatch, model, *args: str) -> int:
    monkeypatch.setattr(cli, "open_checkpoint", lambda spec: (model, {"weights_sha256": "w1"}))
    return cli.main(["build", "--checkpoint", "stub", *args])


@pytest.fixture(scope="module")
def built(manifest, tmp_path_factory, kit):
    model = kit.StubModel()
    out = tmp_path_factory.mktemp("built") / "index"
    with pytest.MonkeyPatch.context() as mp:
        assert run_build(mp, model, "--manifest", str(manifest), "--out", str(out)) == 0
    return out, model


def test_index_directory_layout_and_meta(built, manifest, kit):
    out, model = built
    assert (out / "CURRENT").read_text() == "1\n"
    version = out / "versions" / "1"
    names = {p.name for p in version.iterdir()}
    assert {"meta.json", "audio.faiss", "ids.txt", "vectors.npy", "records.jsonl"} <= names
    meta = json.loads((version / "meta.json").read_text())
    assert meta["factory"] == "Flat" and meta["metric"] == "ip" and meta["dim"] == kit.DIM
    assert meta["model"] == model.identity()
    assert meta["checkpoint"] == {
        "path": str(Path("stub").resolve()),
        "info": {"weights_sha256": "w1"},
    }
    assert meta["source"]["manifest"] == str(manifest.resolve())
    assert meta["n_clips"] == 48 and meta["format_version"] == 1 and meta["created"]
    assert set(meta["captions"]) == {"eng", "fra", "deu", "spa", "nld", "cat", "jpn", "zho"}
    vectors = np.load(version / "vectors.npy", mmap_mode="r")
    assert vectors.dtype == np.float16 and vectors.shape == (48, kit.DIM)
    assert not (out / ".work").exists() or not any((out / ".work").iterdir())
    assert validate(out) == []


def test_every_clip_is_found_by_its_own_embedding(built, manifest):
    store = IndexStore.open(built[0])
    ids = [r.id for r in read_manifest(manifest)]
    assert store.ids() == ids
    queries = np.stack([store.vector(i) for i in ids])
    assert [hits[0][0] for hits in store.search(queries, 5)] == ids
    page2 = store.search(queries[:2], 5, offset=5)
    alone = store.search(queries[:1], 10)[0][5:]
    # FAISS searches the batch, numpy the single query: scores agree to float32 rounding
    assert [i for i, _ in page2[0]] == [i for i, _ in alone]
    assert [s for _, s in page2[0]] == pytest.approx([s for _, s in alone], abs=1e-5)


def test_captions_distinct_per_language_and_mapped_to_their_clips(built, manifest, kit):
    store = IndexStore.open(built[0])
    records = read_manifest(manifest).records
    total = 0
    for lang in store.languages:
        texts = list(dict.fromkeys(t for r in records for t in r.captions[lang]))
        total += len(texts)
        queries = np.stack([kit.caption_vector(t) for t in texts])
        hits = store.search_captions(queries, lang, 1)
        for text, (best,) in zip(texts, hits, strict=True):
            assert best[0] == text
            assert best[2] == [r.id for r in records if text in r.captions[lang]]
    assert store.captions_indexed == total
    shared = store.search_captions(kit.caption_vector(SHARED)[None], "eng", 1)[0][0]
    assert shared[2] == [r.id for r in records[:6]]


def test_records_keep_captions_meta_and_an_absolute_audio_path(built, manifest):
    store = IndexStore.open(built[0])
    original = read_manifest(manifest)
    for record in original.records[:5]:
        stored = store.record(record.id)
        assert stored.captions == record.captions and stored.meta == record.meta
        assert Path(stored.audio).is_absolute()
        assert Path(stored.audio) == original.audio_path(record).resolve()


class Interrupt(Exception):
    pass


def test_interrupted_build_resumes_with_the_remaining_batches(manifest, tmp_path, kit):
    records = manifest_records(manifest)
    out = tmp_path / "index"
    calls: list[tuple[str, int]] = []

    def stop_after(name: str, n: int):
        def hook(shard: str, batch: int) -> None:
            calls.append((shard, batch))
            if shard.startswith(name) and batch == n - 1:
                raise Interrupt(f"{shard} {batch}")

        return hook

    first = kit.StubModel()
    with pytest.raises(Interrupt):
        build_index(
            first, records, out, audio_batch=8, text_batch=32, on_batch=stop_after("audio", 2)
        )
    assert first.audio_calls == [8, 8] and not (out / "CURRENT").exists()

    second = kit.StubModel()
    with pytest.raises(Interrupt):
        build_index(
            second, records, out, audio_batch=8, text_batch=32, on_batch=stop_after("text-fra", 1)
        )
    assert second.audio_calls == [8, 8, 8, 8]  # batches 2..5 of 6
    n_eng = len({t for r in records for t in r.captions["eng"]})
    assert sum(second.text_calls) == n_eng + 32

    third = kit.StubModel()
    assert build_index(third, records, out, audio_batch=8, text_batch=32) == 1
    assert third.audio_calls == []
    n_all = sum(len({t for r in records for t in r.captions[lang]}) for lang in records[0].captions)
    assert sum(third.text_calls) == n_all - n_eng - 32
    assert not list((out / ".work").iterdir())

    clean = tmp_path / "clean"
    build_index(kit.StubModel(), records, clean, audio_batch=8, text_batch=32)
    for name in ("vectors.npy", "captions/fra.npy", "captions/zho.npy"):
        np.testing.assert_array_equal(
            np.load(out / "versions/1" / name), np.load(clean / "versions/1" / name)
        )
    assert validate(out) == []


def test_rebuild_publishes_a_new_version(built, manifest, tmp_path, kit):
    out = tmp_path / "index"
    shutil.copytree(built[0], out)
    store = IndexStore.open(out)
    with pytest.MonkeyPatch.context() as mp:
        assert run_build(mp, kit.StubModel(), "--manifest", str(manifest), "--out", str(out)) == 0
    assert IndexStore.open(out).version == 2
    assert store.version == 1 and len(store) == 48  # an open store keeps serving its version


def test_audio_dir_ids_follow_the_manifest_rules(tiny_corpus, tmp_path, monkeypatch, kit):
    files = sorted((tiny_corpus / "audio").rglob("*.flac"))[:3]
    folder = tmp_path / "clips"
    (folder / "sub dir").mkdir(parents=True)
    shutil.copy(files[0], folder / "plain-1.flac")
    shutil.copy(files[1], folder / "sub dir" / "with space.flac")
    shutil.copy(files[2], folder / "-leading.flac")
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "index"
    assert (
        run_build(monkeypatch, kit.StubModel(), "--audio-dir", str(folder), "--out", str(out)) == 0
    )
    store = IndexStore.open(out)
    ids = store.ids()
    assert len(ids) == 3 and "plain-1.flac" in ids
    derived = {store.record(i).meta["path"]: i for i in ids if i != "plain-1.flac"}
    assert set(derived) == {"sub dir/with space.flac", "-leading.flac"}
    assert derived["sub dir/with space.flac"].startswith("sub_dir_with_space.flac-")
    assert derived["-leading.flac"].startswith("leading.flac-")
    assert store.record("plain-1.flac").captions == {} and store.captions_indexed == 0
    assert store.meta["source"] == {"audio_dir": str(folder.resolve())}
    assert validate(out) == []


def test_bad_arguments_exit_2(manifest, tmp_path, monkeypatch, kit, capsys):
    out = str(tmp_path / "index")
    assert cli.main(["build", "--checkpoint", "stub", "--out", out]) == 2
    assert (
        cli.main(
            [
                "build",
                "--checkpoint",
                str(tmp_path / "none"),
                "--manifest",
                str(manifest),
                "--out",
                out,
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    assert (
        run_build(
            monkeypatch, kit.StubModel(), "--manifest", str(tmp_path / "no.jsonl"), "--out", out
        )
        == 2
    )
    assert (
        run_build(
            monkeypatch,
            kit.StubModel(),
            "--manifest",
            str(manifest),
            "--out",
            out,
            "--factory",
            "NoSuchIndex",
        )
        == 2
    )
    assert run_build(monkeypatch, kit.StubModel(), "--audio-dir", str(tmp_path), "--out", out) == 2
    assert "no audio files" in capsys.readouterr().err
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_factory_override(manifest, tmp_path, monkeypatch, kit):
    out = tmp_path / "index"
    args = ["--manifest", str(manifest), "--out", str(out), "--factory", "HNSW16"]
    assert run_build(monkeypatch, kit.StubModel(), *args) == 0
    store = IndexStore.open(out)
    assert store.meta["factory"] == "HNSW16" and store.meta["factory_auto"] is False
    assert store.meta["captions"]["eng"]["factory"] == "HNSW16"
    assert cli.main(["validate", str(out)]) == 0


def test_real_checkpoint_through_the_cli(tiny_corpus, tmp_path):
    from atri.training.encoders.checkpoint import save_checkpoint
    from atri.training.encoders.model import ModelConfig, build_model

    model = build_model(ModelConfig())  # aisfx + e5-small, random heads
    ckpt = save_checkpoint(
        model, tmp_path / "ckpt", training_config={}, step=0, epoch=0, metrics={}
    )
    records = read_manifest(tiny_corpus / "test.jsonl").records[:4]
    for record in records:
        record.captions = {lang: record.captions[lang] for lang in ("eng", "zho")}
        record.audio = str((tiny_corpus / record.audio).resolve())
    small = tmp_path / "small.jsonl"
    write_manifest(small, records)
    out = tmp_path / "index"
    args = ["build", "--checkpoint", str(ckpt), "--manifest", str(small), "--out", str(out)]
    assert cli.main([*args, "--batch-size", "2"]) == 0
    store = IndexStore.open(out)
    assert store.identity == model.identity() and store.dim == model.config.embed_dim
    assert store.meta["checkpoint"]["info"]["weights_sha256"]
    ids = [r.id for r in records]
    queries = np.stack([store.vector(i) for i in ids])
    assert [h[0][0] for h in store.search(queries, 2)] == ids
    text = records[2].captions["zho"][0]
    query = model.embed_text([text], "zho").detach().numpy()
    assert store.search_captions(query, "zho", 1)[0][0][0] == text
    assert validate(out) == []


# --- kinds, tuning, GPU guard -------------------------------------------------------------


def test_choose_factory_by_size():
    assert faiss_util.choose_factory(0) == "Flat"
    assert faiss_util.choose_factory(20_000) == "Flat"
    for n in (20_001, 1_000_000, 50_000_000):
        kind = faiss_util.choose_factory(n)
        nlist = int(kind.removeprefix("IVF").split(",")[0])
        assert kind.endswith(",SQ8") and nlist & (nlist - 1) == 0
        assert 2 <= nlist / n**0.5 <= 8 or nlist == 65_536


def clustered(n: int, dim: int, seed: int, centers: int = 100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(1234).standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def held_out_recall(path: Path, base: np.ndarray, queries: np.ndarray, meta: dict) -> float:
    """recall@10 as the store searches: reranked from `base` when the kind reranks."""
    from atri.index.version import search_index

    index = faiss_util.read_index(path)
    faiss_util.set_search_params(index, meta["search_params"])
    hits = search_index(index, base, meta.get("rerank", 0), queries, 10)
    found = np.array([[i for i, _ in row] + [-1] * (10 - len(row)) for row in hits])
    return faiss_util.recall_at_k(found, faiss_util.exact_knn(base, queries, 10))


def tuned_recall(tmp_path: Path, n: int, dim: int, factory: str | None) -> tuple[dict, float]:
    base = clustered(n, dim, seed=0)
    staged = tmp_path / "v"
    staged.mkdir()
    meta = write_version(
        staged,
        dim=dim,
        ids=[f"x{i}" for i in range(n)],
        records=(_record(i) for i in range(n)),
        vectors=[base],
        captions={},
        factory=factory,
        meta={},
    )
    stored = np.load(staged / "vectors.npy").astype(np.float32)
    queries = clustered(500, dim, seed=99)  # not the tuning queries
    return meta, held_out_recall(staged / "audio.faiss", stored, queries, meta)


def _record(i: int):
    from atri.training.data.manifest import ClipRecord

    return ClipRecord(f"x{i}", f"/x{i}.wav", {}, {})


def test_hnsw_is_tuned_to_the_target_recall(tmp_path):
    meta, recall = tuned_recall(tmp_path, 20_000, 32, "HNSW32")
    assert meta["search_params"]["efSearch"] in faiss_util.EF_SEARCH_GRID
    assert meta["recall_at_10"] >= 0.95 and recall >= 0.93  # held-out queries: a little slack


def test_ivf_is_tuned_to_the_target_recall(tmp_path):
    meta, recall = tuned_recall(tmp_path, 20_000, 32, "IVF64,Flat")
    assert meta["search_params"]["nprobe"] <= 64
    assert meta["recall_at_10"] >= 0.95 and recall >= 0.93


@pytest.mark.slow
def test_large_index_gets_a_compact_kind_at_target_recall(tmp_path):
    meta, recall = tuned_recall(tmp_path, 250_000, 64, None)
    assert meta["factory"] == "IVF2048,SQ8" and meta["factory_auto"]
    assert meta["recall_at_10"] >= 0.95 and recall >= 0.94


def test_gpu_guard_makes_no_gpu_call_without_a_gpu(monkeypatch):
    def no_gpu_here(*args, **kwargs):
        raise AssertionError("GPU call on a CPU-only machine")

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", no_gpu_here)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", no_gpu_here, raising=False)
    base = clustered(2_000, 16, seed=0)
    index = faiss_util.build_index("IVF16,Flat", 16, [base], base)
    assert index.ntotal == 2_000
    assert faiss_util.exact_knn(base, base[:3], 5)[:, 0].tolist() == [0, 1, 2]


def test_gpu_guard_uses_a_gpu_when_faiss_sees_one(monkeypatch):
    moved: list[str] = []

    def to_gpu(index):
        moved.append(type(index).__name__)
        return index  # stands in for the GPU copy

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpu)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda index: index, raising=False)
    base = clustered(1_000, 16, seed=0)
    faiss_util.exact_knn(base, base[:2], 3)
    assert moved == ["IndexFlatIP"]


def test_empty_caption_language_and_zero_clips(tmp_path):
    staged = tmp_path / "v"
    staged.mkdir()
    empty = CaptionSource([], [], [])
    meta = write_version(
        staged,
        dim=8,
        ids=[],
        records=[],
        vectors=[],
        captions={"eng": empty},
        factory=None,
        meta={},
    )
    assert meta["n_clips"] == 0 and meta["captions"]["eng"]["n"] == 0
