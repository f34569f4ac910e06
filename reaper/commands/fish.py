"""fish completion generated from reaper's argparse parser (`reaper completion fish`).

shtab, which generates the bash, zsh and tcsh scripts, has no fish generator (github.com/tqdm/
shtab issue 134). fish's completions are flat `complete` commands, one per option or word, each
guarded by a condition on the words already typed (fish-shell docs, "Writing your own
completions"), so they are written here from the same parser the commands use: nothing is
listed by hand, and a new option or command appears without a change to this module.

Pure: `fish_script(parser)` returns the script's text."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path

_SUBPARSERS = argparse._SubParsersAction  # the action add_subparsers() adds (no public name)

# Metavars that name a file or a folder: only those options complete file names.
PATH_METAVARS = frozenset({"FILE", "PATH", "DIR", "FOLDER", "OUT"})


def fish_script(parser: argparse.ArgumentParser) -> str:
    """The fish completion script for `parser` (its `prog` is the command completed)."""
    prog = parser.prog
    lines = [
        f"# fish completion for {prog}, generated from its parser (`{prog} completion fish`)",
        f"complete -c {prog} -f",  # no file names unless an option or argument takes a path
    ]
    lines += _parser_lines(prog, parser, ())
    return "\n".join(lines) + "\n"


def _parser_lines(
    prog: str, parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[str]:
    """The lines of one (sub)parser reached by the command words `path`. A parser's own options
    are accepted only before its subcommand's word (argparse hands the rest to the subparser)."""
    words = [tuple(a.choices) for a in parser._actions if isinstance(a, _SUBPARSERS)]
    here = _condition(path, none_of=words[0] if words else ())
    for action in parser._actions:  # argparse has no public walk over a parser's actions
        if isinstance(action, _SUBPARSERS):
            yield from _subcommand_lines(prog, action, path)
        elif action.option_strings:
            yield _option_line(prog, action, here)
        elif line := _positional_line(prog, action, here):
            yield line


def _subcommand_lines(
    prog: str, action: argparse._SubParsersAction[argparse.ArgumentParser], path: tuple[str, ...]
) -> Iterator[str]:
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    names = tuple(action.choices)
    before = _condition(path, none_of=names)
    for name, sub in action.choices.items():
        yield f"complete -c {prog} -n {_quote(before)} -a {name} -d {_quote(helps.get(name, ''))}"
        yield from _parser_lines(prog, sub, (*path, name))


def _option_line(prog: str, action: argparse.Action, condition: str) -> str:
    words = [f"complete -c {prog}"]
    if condition:
        words.append(f"-n {_quote(condition)}")
    for option in action.option_strings:
        if option.startswith("--"):
            words.append(f"-l {option[2:]}")
        elif len(option) == 2:  # a short option: "-h"
            words.append(f"-s {option[1]}")
    if action.nargs != 0:  # the option takes a value
        words.append(_value_words(action))
    if action.help and action.help != argparse.SUPPRESS:
        words.append(f"-d {_quote(_first_sentence(action.help))}")
    return " ".join(words)


def _positional_line(prog: str, action: argparse.Action, condition: str) -> str | None:
    """Choices or file names for a positional argument; None for a free word (a job id)."""
    if action.choices is not None:
        values = " ".join(str(choice) for choice in action.choices)
        return f"complete -c {prog} -n {_quote(condition)} -a {_quote(values)}"
    if _takes_path(action):
        return f"complete -c {prog} -n {_quote(condition)} -F"
    return None


def _value_words(action: argparse.Action) -> str:
    if action.choices is not None:
        return f"-x -a {_quote(' '.join(str(choice) for choice in action.choices))}"
    return "-r -F" if _takes_path(action) else "-x"


def _takes_path(action: argparse.Action) -> bool:
    metavar = action.metavar if isinstance(action.metavar, str) else None
    return action.type is Path or (metavar or "").upper() in PATH_METAVARS


def _condition(path: Sequence[str], none_of: Sequence[str] = ()) -> str:
    """A fish condition: every word of `path` typed, and none of `none_of` yet."""
    tests = [f"__fish_seen_subcommand_from {word}" for word in path]
    if none_of:
        tests.append(f"not __fish_seen_subcommand_from {' '.join(none_of)}")
    elif not path:
        return ""
    return "; and ".join(tests)


def _first_sentence(text: str) -> str:
    """fish shows one short description per candidate: the help up to its first `;`."""
    return " ".join(text.split(";", 1)[0].split())


def _quote(text: str) -> str:
    """A fish single-quoted string: only `\\` and `'` are special inside it."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
