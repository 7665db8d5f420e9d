"""The `atri` subcommands: each a thin `main(argv) -> int` over plain library functions
(common.py: the shared parse-run-map-errors body and the exit codes)."""
