"""One meaning per command-line word, across every ``atlas`` command (see ``docs/cli.md``).

* ``--json`` is a flag everywhere: the command's result goes to standard output as JSON (anything else it
  prints goes to standard error). A JSON report written to a file is ``--json-out PATH`` (``-``: standard
  output, the same as ``--json``).
* ``--router NAME`` names a router kind from the registry (``atlas-cluster``, ``knn``, ``rl``, ...), as
  ``atlas fit NAME`` and ``atlas eval --routers`` do; a saved router file is always ``--router-file PATH``.
* ``--policy DIR`` is a trained RL policy directory wherever it appears (``ask``, ``eval``, ``serve``).

The spellings of older releases still work: :func:`rewrite_old_words` turns them into the new ones before
the command parses its options, and prints a one-line notice on standard error for each.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional

# Commands whose ``--json`` took a file path (now ``--json-out``).
JSON_OUT_COMMANDS = frozenset({"eval", "calibrate", "sweep", "train-rl"})
# Commands whose ``--router`` took a router file (now ``--router-file``): there it had no other meaning.
ROUTER_FILE_COMMANDS = frozenset({"route", "serve"})
# Suffixes that mark a ``--router`` value as a file in commands where ``--router`` may also be a mode.
ROUTER_FILE_SUFFIXES = (".atlas", ".joblib")


def notice(old: str, new: str) -> str:
    """The one line printed when an old spelling is used."""
    return f"notice: '{old}' is now '{new}' (the old spelling still works, for now)"


def _is_value(token: str) -> bool:
    """Whether ``token`` can be the value of an option: ``-`` (standard output/input) or a non-option."""
    return token == "-" or not token.startswith("-")


def _looks_like_router_file(value: str) -> bool:
    return value.endswith(ROUTER_FILE_SUFFIXES) or os.path.isfile(os.path.expanduser(value))


def rewrite_old_words(command: Optional[str], args: list[str],
                      say: Optional[Callable[[str], None]] = None) -> list[str]:
    """``args`` of ``atlas COMMAND`` with the old spellings replaced by the new ones (a notice each).

    * eval, calibrate, sweep, train-rl: ``--json PATH`` / ``--json=PATH`` -> ``--json-out PATH``
      (``--json`` followed by an option, or last, stays the flag);
    * route, serve: ``--router PATH`` / ``--router=PATH`` -> ``--router-file PATH``;
    * ask: ``--router PATH`` (an existing file, or a name ending in .atlas/.joblib) -> ``--router-file PATH``;
      ``--router rl|file|pair`` is the old mode option, which ``ask`` still reads (with its own notice).

    Nothing after ``--`` is touched.
    """
    said: set[str] = set()

    def tell(line: str) -> None:  # each notice once, however often the old spelling is repeated
        if line not in said:
            said.add(line)
            if say is not None:
                say(line)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()

    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out.extend(args[i:])
            break
        nxt = args[i + 1] if i + 1 < len(args) else None
        if command in JSON_OUT_COMMANDS:
            if tok == "--json" and nxt is not None and _is_value(nxt):
                tell(notice("--json PATH", "--json-out PATH"))
                out += ["--json-out", nxt]
                i += 2
                continue
            if tok.startswith("--json="):
                tell(notice("--json PATH", "--json-out PATH"))
                out.append("--json-out=" + tok.split("=", 1)[1])
                i += 1
                continue
        if command in ROUTER_FILE_COMMANDS or command == "ask":
            value, width = None, 0
            if tok == "--router" and nxt is not None and _is_value(nxt):
                value, width = nxt, 2
            elif tok.startswith("--router="):
                value, width = tok.split("=", 1)[1], 1
            if value is not None and (command in ROUTER_FILE_COMMANDS or _looks_like_router_file(value)):
                tell(notice("--router PATH", "--router-file PATH"))
                out += ["--router-file", value]
                i += width
                continue
        out.append(tok)
        i += 1
    return out
