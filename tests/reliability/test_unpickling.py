"""Safe loading: no user-supplied file is unpickled beyond torch's weights-only allow-list.
A .pt whose pickle runs code is refused before the code runs, wherever it is given
(load_checkpoint, `atri index build`, `atri serve`, `atri train --resume`, the backbone
loaders); and a static scan finds no unrestricted unpickling in the shipped code."""

from __future__ import annotations

import ast
import builtins
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from atri.service.app import create_app

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["src", "training", "index", "service", "bench", "scripts"]


# --- malicious pickles ---------------------------------------------------------------------


class Payload:
    """Unpickling this runs `exec`, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def evil_files(folder: Path) -> dict[str, Path]:
    """The payload in each form torch.load meets: zip (torch >= 1.6), legacy, bare pickle."""
    marker = folder / "PWNED"
    state = {"weight": torch.zeros(2), "payload": Payload(marker)}
    files = {}
    files["zip"] = folder / "evil.pt"
    torch.save(state, files["zip"])
    files["legacy"] = folder / "evil-legacy.pth"
    torch.save(state, files["legacy"], _use_new_zipfile_serialization=False)
    files["pickle"] = folder / "evil-pickle.ckpt"
    files["pickle"].write_bytes(pickle.dumps(state))
    return files


def test_the_payload_runs_when_unpickled_plainly(tmp_path) -> None:
    """The premise of the tests below: these files do run code under plain unpickling."""
    files = evil_files(tmp_path)
    pickle.loads(files["pickle"].read_bytes())
    assert (tmp_path / "PWNED").read_text() == "pwned"


PICKLE_WARNING = "ignore:Detected pickle protocol"  # torch's, about the bare pickle


@pytest.mark.filterwarnings(PICKLE_WARNING)
@pytest.mark.parametrize("form", ["zip", "legacy", "pickle"])
def test_malicious_checkpoint_file_is_refused(form, tmp_path) -> None:
    from atri.training.encoders.checkpoint import UnsafeCheckpointError, load_checkpoint

    path = evil_files(tmp_path)[form]
    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_malicious_checkpoint_given_to_index_build_exits_2(tmp_path, capsys, make_audio) -> None:
    from atri.commands import index as cli

    evil = evil_files(tmp_path)["zip"]
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "a.flac").write_bytes(make_audio(0.5, 16000, "FLAC"))
    args = ["--audio-dir", str(audio), "--out", str(tmp_path / "index")]
    assert cli.main(["build", "--checkpoint", str(evil), *args]) == 2
    assert "refused to unpickle" in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()


def test_malicious_checkpoint_given_to_serve_fails_the_load(index_dir, make_settings, tmp_path):
    evil = evil_files(tmp_path)["zip"]
    app = create_app(make_settings(index_dir, checkpoint=str(evil)))
    with TestClient(app) as client:
        state = app.state.load_state
        assert state.done.wait(timeout=120)
        health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "failed"
    assert "refused to unpickle" in health.json()["error"]
    assert not (tmp_path / "PWNED").exists()


def test_malicious_train_state_is_refused_on_resume(checkpoint_dir, tmp_path) -> None:
    from atri.training.config import RunOptions, TrainConfig
    from atri.training.trainer import STATE_FILE, Dist, Run

    out = tmp_path / "run"
    shutil.copytree(checkpoint_dir, out / "last")
    shutil.copy(evil_files(tmp_path)["zip"], out / "last" / STATE_FILE)
    config = TrainConfig(strategy="kcl", train=str(tmp_path / "t"), val=str(tmp_path / "v"))
    with pytest.raises(pickle.UnpicklingError):
        options = RunOptions(out=out, cache_dir=tmp_path / "cache", resume=True)
        Run(config, options, Dist(0, 1, torch.device("cpu")))
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.filterwarnings(PICKLE_WARNING)
def test_malicious_backbone_files_are_refused(tmp_path) -> None:
    from atri.training.encoders.aisfx import load_aisfx_state
    from atri.training.encoders.ced import read_ced_checkpoint

    for form, path in evil_files(tmp_path).items():
        with pytest.raises(pickle.UnpicklingError):
            load_aisfx_state(path, expected_sha256=None)
        with pytest.raises(pickle.UnpicklingError):
            read_ced_checkpoint(path)
        assert not (tmp_path / "PWNED").exists(), form


# --- no unrestricted unpickling anywhere in the shipped code --------------------------------


UNSAFE_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads",
    "dill.load", "dill.loads", "joblib.load", "pandas.read_pickle", "pd.read_pickle",
    "marshal.load", "marshal.loads", "shelve.open", "yaml.unsafe_load",
}  # fmt: skip


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def unsafe_loads(source: str, where: str) -> list[str]:
    """Calls that unpickle without restriction, in one file's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}

        def is_true(key: str, keywords: dict = keywords) -> bool:
            value = keywords.get(key)
            return isinstance(value, ast.Constant) and value.value is True

        line = f"{where}:{node.lineno}: {name}"
        if name in UNSAFE_CALLS or name.endswith(".read_pickle"):
            found.append(line)
        elif name.endswith("torch.load") and not is_true("weights_only"):
            found.append(f"{line} without weights_only=True")
        elif name in ("np.load", "numpy.load") and "allow_pickle" in keywords:
            if not (isinstance(v := keywords["allow_pickle"], ast.Constant) and v.value is False):
                found.append(f"{line} with allow_pickle")
        elif name == "yaml.load" and "SafeLoader" not in ast.unparse(node):
            found.append(f"{line} without SafeLoader")
    return found


def test_the_scan_finds_unsafe_loads() -> None:
    source = (
        "import pickle, torch, numpy as np\n"
        "pickle.load(f)\n"
        "torch.load(p)\n"
        "torch.load(p, weights_only=False)\n"
        "np.load(p, allow_pickle=True)\n"
        "torch.load(p, map_location='cpu', weights_only=True)\n"
        "np.load(p)\n"
    )
    assert [line.split(": ", 1)[1] for line in unsafe_loads(source, "x.py")] == [
        "pickle.load",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "np.load with allow_pickle",
    ]


def test_no_unrestricted_unpickling_in_shipped_code() -> None:
    found = []
    for folder in SHIPPED:
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            where = str(path.relative_to(REPO))
            found += unsafe_loads(text, where)
            for literal in ("weights_only=False", "allow_pickle=True"):
                if literal in text:
                    found.append(f"{where}: {literal}")
    assert not found, "\n".join(found)
