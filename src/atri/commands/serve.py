"""`atri serve --index DIR [--checkpoint C] [--host H] [--port P]`: the HTTP service
(shared spec api.md, cli.md) under uvicorn. Other settings come from `ATRI_*` variables
(docs/service.md).

The port opens at once and model and index load behind it; if loading fails (say the
index was built with another model) the server stops and the command exits 2 with the
reason."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from atri.commands.common import BadInput, run_command
from atri.index.opener import NO_INDEX
from atri.service.settings import Settings

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atri serve", description="serve an index over HTTP (docs/service.md)"
    )
    parser.add_argument("--index", type=Path, help="index directory (default: $ATRI_INDEX_DIR)")
    parser.add_argument(
        "--checkpoint", help="checkpoint directory or 'default' (default: the index's own)"
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment settings with the command-line options on top."""
    given = {
        "index_dir": args.index,
        "checkpoint": args.checkpoint,
        "host": args.host,
        "port": args.port,
    }
    return Settings(**{k: v for k, v in given.items() if v is not None})


def check_index(settings: Settings) -> str | None:
    """A problem that makes serving pointless, found before the port opens."""
    if settings.index_dir is None:
        return NO_INDEX
    if not (settings.index_dir / "CURRENT").is_file():
        return f"{settings.index_dir}: no index here (build one with `atri index build`)"
    return None


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for uvicorn (`Server.run(sockets=...)`).

    Created with proto IPPROTO_TCP, as getaddrinfo gives it to asyncio when uvicorn binds
    itself: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
    Nagle holds each response body behind its headers until the client's delayed ACK,
    40 ms on every keep-alive request after the first (uvicorn's own `bind_socket`
    leaves proto 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> int:
    """Run the service until interrupted; 2 when the model or index failed to load."""
    import uvicorn

    from atri.service.app import create_app
    from atri.service.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    state = app.state.load_state
    # Bind before the lifespan starts the loader: uvicorn binds after it, so a taken port
    # used to exit while the loader thread was inside native model code (a C++ abort).
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"atri serve: error: cannot serve on {settings.host}:{settings.port}: {exc}",
              file=sys.stderr)
        return 1
    log.info("listening on %s:%d", settings.host, settings.port)

    def stop_on_failure() -> None:
        state.done.wait()
        if state.status == "failed":
            server.should_exit = True

    threading.Thread(target=stop_on_failure, name="atri-load-watch", daemon=True).start()
    with sock:
        server.run(sockets=[sock])
    if state.status == "failed":
        print(f"atri serve: error: {state.error}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        raise BadInput(f"bad setting: {exc}") from exc
    problem = check_index(settings)
    if problem:
        raise BadInput(problem)
    return serve(settings)


def main(argv: list[str] | None = None) -> int:
    # serve() configures logging (JSON by default): a handler set up before it would let
    # import-time lines (faiss) through in another format. ATRI_THREADS is one of the
    # service's Settings, applied when the model has loaded (service/loading.py).
    return run_command(build_parser(), run, argv, {}, log_level=None, threads=False)
