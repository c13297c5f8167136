"""The `resdet` command's subcommands, one module each (`resdet train` is detection/cli/train.py).

Each module has `main(argv=None) -> int`: it parses the command line and calls the library.
`resdet` (detection/cli/main.py) dispatches to them; `python -m detection.cli COMMAND ...` and,
in a checkout, `python tools/<name>.py ...` run the same code.
"""
