"""The `detection` command: LightningCLI for fit/validate/test plus extra subcommands."""

from __future__ import annotations

import importlib
import sys

# Extra subcommands: each module exposes `main(argv: list[str]) -> int`.
EXTRA_COMMANDS = {
    "evaluate": "detection.commands.evaluate",
    "inspect": "detection.commands.inspect",
    "export": "detection.commands.export",
    "data": "detection.commands.data",
    "demo": "detection.commands.demo",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `detection` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTRA_COMMANDS:
        module = importlib.import_module(EXTRA_COMMANDS[argv[0]])
        return int(module.main(argv[1:]) or 0)
    raise SystemExit("fit/validate/test not wired yet")


if __name__ == "__main__":
    sys.exit(main())
