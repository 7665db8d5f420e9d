"""Every `atri ...` that the Dockerfile and docker-compose.yml run is a real command
whose arguments parse with the real CLI."""

from __future__ import annotations

import importlib
import shlex

import pytest

TARGETS = ("cpu", "gpu")


_SEPARATORS = {";", "&&", "||", "|", "&", "then", "else", "do", "fi", "done", "if"}


def atri_invocations(script: str) -> list[list[str]]:
    """The argument lists of the `atri` commands in a shell script."""
    lexer = shlex.shlex(script.replace("\n", " ; "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found, words = [], []
    for token in [*lexer, ";"]:
        if token in _SEPARATORS or token.startswith((">", "<")):
            if words and words[0] == "exec":
                words = words[1:]
            if words and words[0] == "atri":
                found.append(words[1:])
            words = [] if token in _SEPARATORS else ["<redirect>"]
        elif words != ["<redirect>"]:
            words.append(token)
    return found


def commands_run(dockerfile, compose) -> list[tuple[str, list[str]]]:
    """(where, argv after `atri`) for every atri command the image and compose run."""
    out = []
    for target in TARGETS:
        entry = dockerfile.effective(target, "ENTRYPOINT").exec_form()
        assert entry == ["atri"]
        out.append((f"Dockerfile {target} CMD", dockerfile.effective(target, "CMD").exec_form()))
        for stage in dockerfile.chain(target):
            for ins in stage.instructions:
                if ins.keyword == "RUN":
                    out += [(f"Dockerfile:{ins.line}", a) for a in atri_invocations(ins.args)]
    for name, service in compose.services.items():
        command = service.get("command", [])
        entry = service.get("entrypoint")
        if entry is None:
            out.append((f"compose {name}", command))
        else:
            assert entry == ["/bin/sh", "-c"], f"{name}: unexpected entrypoint {entry}"
            scripts = command if isinstance(command, list) else [command]
            calls = [a for s in scripts for a in atri_invocations(s)]
            assert calls, f"compose {name}: runs no atri command"
            out += [(f"compose {name}", a) for a in calls]
    return out


def test_atri_invocations_parser() -> None:
    script = (
        'if [ -f x ]; then echo "a; atri no"; exit 0; fi\n'
        'exec atri index build --out "d e" >/dev/null'
    )
    assert atri_invocations(script) == [["index", "build", "--out", "d e"]]
    assert atri_invocations("atri serve --help >/dev/null && python -c 1") == [["serve", "--help"]]


def test_every_atri_command_exists(dockerfile, compose) -> None:
    from atri.cli import COMMANDS

    calls = commands_run(dockerfile, compose)
    assert {argv[0] for _, argv in calls} >= {"serve", "corpus", "index", "train"}
    for where, argv in calls:
        assert argv and argv[0] in COMMANDS, f"{where}: `atri {argv[0]}` is not a command"
        module = importlib.import_module(COMMANDS[argv[0]][0])
        args = [a for a in argv[1:] if a != "--help"]
        try:
            module.build_parser().parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"{where}: `atri {shlex.join(argv)}` does not parse (exit {exc.code})")
