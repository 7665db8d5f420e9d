"""`atri serve` arguments and `atri demo`'s steps (corpus, index, serve; each only when
needed), with the heavy steps replaced by recorders."""

from __future__ import annotations

from pathlib import Path

import pytest

from atri.commands import demo
from atri.commands import serve as cli
from atri.commands.common import BadInput


def test_serve_options_override_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ATRI_PORT", "9000")
    monkeypatch.setenv("ATRI_HOST", "0.0.0.0")
    args = cli.build_parser().parse_args(["--index", str(tmp_path), "--port", "8123"])
    settings = cli.settings_from(args)
    assert settings.index_dir == tmp_path
    assert settings.port == 8123  # the option wins
    assert settings.host == "0.0.0.0"  # the environment fills the rest
    assert settings.checkpoint is None


def test_serve_checks_before_opening_the_port(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.delenv("ATRI_INDEX_DIR", raising=False)
    served = []
    monkeypatch.setattr(cli, "serve", lambda settings: served.append(settings) or 0)
    assert cli.main([]) == 2
    assert "--index" in capsys.readouterr().err
    assert cli.main(["--index", str(tmp_path), "--port", "99999"]) == 2
    assert "port" in capsys.readouterr().err
    (tmp_path / "CURRENT").write_text("1\n")
    assert cli.main(["--index", str(tmp_path)]) == 0  # handed to serve
    assert served[0].index_dir == tmp_path


@pytest.fixture
def recorded(monkeypatch):
    calls: dict[str, list] = {"build": [], "index": [], "serve": []}

    def build(out, size, seed, workers):
        calls["build"].append((Path(out), size, seed))
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "corpus.json").write_text("{}")

    def manifest_source(manifest):
        return [], {"manifest": str(manifest)}

    def index_records(checkpoint, records, source, out):
        calls["index"].append((checkpoint, source["manifest"]))
        out.mkdir(parents=True, exist_ok=True)
        (out / "CURRENT").write_text("1\n")
        return 1

    def serve(settings):
        calls["serve"].append(settings)
        return 0

    monkeypatch.setattr("atri.training.corpus.build.build", build)
    monkeypatch.setattr("atri.commands.index.manifest_source", manifest_source)
    monkeypatch.setattr("atri.commands.index.index_records", index_records)
    monkeypatch.setattr(demo, "serve", serve)
    return calls


def test_demo_builds_what_is_missing_then_serves(recorded, tmp_path) -> None:
    assert demo.main(["--data", str(tmp_path)]) == 0
    assert recorded["build"] == [(tmp_path / "corpus-small", "small", 0)]
    assert recorded["index"] == [("default", str(tmp_path / "corpus-small" / "test.jsonl"))]
    (settings,) = recorded["serve"]
    assert settings.index_dir == tmp_path / "index-small"
    assert settings.port == 8000 and settings.checkpoint == "default"

    # a second run finds the index and only serves (the corpus builder checks itself)
    assert demo.main(["--data", str(tmp_path), "--port", "8001"]) == 0
    assert len(recorded["index"]) == 1
    assert recorded["serve"][1].port == 8001


def test_demo_reports_a_failed_index_build(recorded, monkeypatch, tmp_path, capsys) -> None:
    def fail(*args):
        raise BadInput("--checkpoint nowhere: checkpoint not found")

    monkeypatch.setattr("atri.commands.index.index_records", fail)
    assert demo.main(["--data", str(tmp_path)]) == 1
    assert "atri demo: error: --checkpoint nowhere: checkpoint not found" in capsys.readouterr().err
    assert recorded["serve"] == []


def test_demo_rebuilds_an_index_of_other_checkpoint_weights(
    index_dir, checkpoint_dir, make_checkpoint, tmp_path
) -> None:
    """After an update ships a retrained default checkpoint, the demo's old index would make
    `atri serve` refuse to start: the demo sees the changed weights and indexes again."""
    assert demo.outdated(index_dir, str(checkpoint_dir)) is None  # the one it was built with
    retrained = make_checkpoint(1)  # same architecture, other head weights
    assert "other weights" in demo.outdated(index_dir, str(retrained))
    assert demo.outdated(tmp_path / "nothing-here", str(retrained)) is None  # serve reports


def test_demo_indexes_again_only_when_outdated(recorded, monkeypatch, tmp_path) -> None:
    reasons = iter([None, "it was built with other weights of checkpoint default"])
    monkeypatch.setattr(demo, "outdated", lambda index, checkpoint: next(reasons))
    assert demo.main(["--data", str(tmp_path)]) == 0  # absent: built
    assert demo.main(["--data", str(tmp_path)]) == 0  # current: served as it is
    assert len(recorded["index"]) == 1
    assert demo.main(["--data", str(tmp_path)]) == 0  # outdated: built again
    assert len(recorded["index"]) == 2 and len(recorded["serve"]) == 3


def test_served_connections_send_without_nagle() -> None:
    """asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP; on a
    socket bound with proto 0 every keep-alive response waited 40 ms for a delayed ACK."""
    import asyncio
    import socket

    async def nodelay_of_accepted() -> int:
        sock = cli.listening_socket("127.0.0.1", 0)
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()

        def connected(reader, writer) -> None:
            option = writer.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            accepted.set_result(option)
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            option = await asyncio.wait_for(accepted, 10)
            writer.close()
        return option

    assert asyncio.run(nodelay_of_accepted()) != 0


def test_a_taken_port_is_an_error_naming_it() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            cli.listening_socket("127.0.0.1", taken.getsockname()[1])
