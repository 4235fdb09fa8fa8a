"""The CLI reference page (docs/reference/cli.md) from the argparse parser."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

from docsgen import HEADER, REGENERATE, _cell, _code


def find_parser() -> argparse.ArgumentParser:
    """The `splitserve` parser: what a function of `splitserve.cli` that takes no arguments builds."""
    cli = importlib.import_module("splitserve.cli")
    names = sorted(vars(cli), key=lambda n: (n != "build_parser", "parser" not in n, n))
    for name in names:
        func = getattr(cli, name)
        if not inspect.isfunction(func) or "parser" not in name:
            continue
        if any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in _params(func)):
            continue
        parser = func()
        if isinstance(parser, argparse.ArgumentParser):
            return parser
    parser = _parser_of_main(cli)
    if parser is None:
        raise SystemExit("scripts/docs.py: no function of splitserve.cli builds an argparse.ArgumentParser")
    return parser


class _Parsed(Exception):
    pass


def _parser_of_main(cli: Any) -> argparse.ArgumentParser | None:
    """The parser `splitserve.cli.main` parses its arguments with, wherever it is built: caught
    at `parse_args`, before any command runs."""
    caught: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    def catch(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        caught.append(self)
        raise _Parsed

    argparse.ArgumentParser.parse_args = catch  # type: ignore[assignment,method-assign]
    try:
        cli.main(["--help"])
    except _Parsed:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    return caught[0] if caught else None


def _params(func: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return []


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.ArgumentParser, str]]:
    """(parser, one-line help) of every subcommand, nested ones too, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias
                    continue
                seen.add(id(sub))
                yield sub, helps.get(name, "")
                yield from _subcommands(sub)


def _shown(action: argparse.Action) -> bool:
    return action.help is not argparse.SUPPRESS and not isinstance(
        action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    )


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar))
    if action.choices is not None and not action.option_strings:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _argument(action: argparse.Action) -> str:
    if not action.option_strings:
        name = _metavar(action)
        return f"{name} [{name} ...]" if action.nargs in ("+", "*") else name
    if isinstance(action, argparse.BooleanOptionalAction):
        return " / ".join(action.option_strings)
    flags = ", ".join(action.option_strings)
    if action.nargs == 0:
        return flags
    value = _metavar(action) if action.choices is None else "{" + ",".join(map(str, action.choices)) + "}"
    return f"{flags} {value} [{value} ...]" if action.nargs in ("+", "*") else f"{flags} {value}"


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        values = {**vars(action), "prog": prog}
        values = {k: (getattr(v, "__name__", v) if callable(v) else v) for k, v in values.items()}
        if values.get("choices") is not None:
            values["choices"] = ", ".join(map(str, values["choices"]))
        text = text % values
    if isinstance(action, argparse._AppendAction):
        text += " Repeatable."
    return text


def _default(action: argparse.Action) -> str:
    if not action.option_strings or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
        return ""
    return _code(action.default)


def cli_page() -> str:
    parser = find_parser()
    out = [HEADER.format(cmd=REGENERATE, source="the parser `splitserve.cli` builds"), "# CLI reference\n\n"]
    out.append(f"{_cell(parser.description or '')}\n\n")
    out.append(
        "Every command writes its result to stdout and its progress to stderr. The servers' flags "
        "(`serve-*`) are their [settings](settings.md): each is also an environment variable, shown in "
        "brackets. `splitserve COMMAND --help` prints the same.\n\n"
    )
    commands = list(_subcommands(parser))
    out.append("| command | what it does |\n|---|---|\n")
    for sub, help_text in commands:
        out.append(f"| [`{sub.prog}`](#{_anchor(sub.prog)}) | {_cell(help_text)} |\n")
    for sub, help_text in commands:
        out.append(f"\n## {sub.prog} {{#{_anchor(sub.prog)}}}\n\n")
        if help_text:
            out.append(f"{_cell(help_text)}\n\n")
        if sub.description and sub.description != help_text:
            out.append(_description(sub.description))
        shown = [a for a in sub._actions if _shown(a)]
        positional = [_argument(a) for a in shown if not a.option_strings]
        options = " [options]" if any(a.option_strings for a in shown) else ""
        out.append(f"```\n{' '.join([sub.prog, *positional])}{options}\n```\n\n")
        if shown:
            out.append("| argument | default | |\n|---|---|---|\n")
            for action in shown:
                out.append(f"| {_code(_argument(action))} | {_default(action)} | {_cell(_help(action, sub.prog))} |\n")
        if sub.epilog:
            out.append(f"\n{sub.epilog.strip()}\n")
    return "".join(out)


def _description(text: str) -> str:
    """A parser's description: prose paragraphs as prose, indented ones (a list of targets) as is."""
    out = ""
    for paragraph in re.split(r"\n\s*\n", text.strip("\n")):
        lines = paragraph.rstrip().splitlines()
        if any(line.startswith((" ", "\t")) for line in lines):
            out += "```\n" + "\n".join(lines) + "\n```\n\n"
        else:
            out += " ".join(line.strip() for line in lines).replace("<", "&lt;").replace(">", "&gt;") + "\n\n"
    return out


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
