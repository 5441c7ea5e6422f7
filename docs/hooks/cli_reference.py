"""A MkDocs hook: the CLI reference (docs/reference/cli.md) written at build time from the typer app itself.

Every command of `interlink.cli.app`, the `interlink.commands` entry points' too (`interlink.cli.Commands` loads them),
each with its usage line, help text and a table of its arguments and options. The page holds the marker line
`<!-- cli-reference -->` where they go; a page without it fails the build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from mkdocs.exceptions import PluginError

PAGE = "reference/cli.md"
MARKER = "<!-- cli-reference -->"


def commands(app: typer.Typer) -> Iterator[tuple[Any, Any]]:
    """Each (command, its context) of `app`, the app's root first, sub-commands after their group, hidden ones left out."""
    root = typer.main.get_command(app)
    yield from _walk(root, root.context_class(root, info_name=app.info.name))


def _walk(command: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    yield command, ctx
    for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            yield from _walk(sub, sub.context_class(sub, info_name=name, parent=ctx))


def anchor(ctx: Any) -> str:
    """The heading id of a command: `interlink-dlq-list` for `interlink dlq list`."""
    return ctx.command_path.replace(" ", "-")


def reference(app: typer.Typer, about: str | None = None) -> str:
    """The Markdown of every command; `about`, if given, is the root command's text instead of its one-line help."""
    return "\n".join(_command(command, ctx, about if ctx.parent is None else None) for command, ctx in commands(app))


def _command(command: Any, ctx: Any, about: str | None) -> str:
    depth = ctx.command_path.count(" ")
    level = "#" * min(2 + max(depth - 1, 0), 4)
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    text = _text(about or command.help or "")
    lines = [f"{level} `{ctx.command_path}` {{ #{anchor(ctx)} }}", "", text, "", "```text", usage, "```", ""]
    if subcommands := [name for name in getattr(command, "list_commands", lambda _ctx: [])(ctx)
                       if not command.get_command(ctx, name).hidden]:
        lines += ["Commands: " + ", ".join(f"[`{name}`](#{anchor(ctx)}-{name})" for name in subcommands), ""]
    params = [p for p in command.get_params(ctx) if not p.hidden and p.name != "help"]
    if params:
        lines += ["| name | type | default | help |", "|---|---|---|---|"]
        lines += [_row(param, ctx) for param in params]
        lines += [""]
    return "\n".join(lines)


def _row(param: Any, ctx: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{param.display_name_raw}` (argument)"
    else:
        name = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    kind = param.display_type(ctx).removeprefix("<").removesuffix(">").removesuffix(" range")
    if param.param_type_name == "option" and param.is_flag:
        kind = "flag"
    bounds = [f"≥ {param.min}" if getattr(param, "min", None) is not None else "",
              f"≤ {param.max}" if getattr(param, "max", None) is not None else ""]
    if any(bounds):
        kind = f"{kind} ({', '.join(b for b in bounds if b)})"
    return f"| {name} | {_cell(kind)} | {_default(param)} | {_cell(param.help or '')} |"


def _default(param: Any) -> str:
    if param.required:
        return "required"
    default = param.default
    if callable(default):
        return "computed"
    if default is None or default == () or default == []:
        return "—"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return "`" + " ".join(str(default).split()).replace("|", "\\|") + "`"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: one line, no column breaks."""
    return _text(" ".join(text.split())).replace("|", "\\|")


def _text(text: str) -> str:
    """Help text as Markdown: `<` and `>` outside code spans are text, not HTML (`<home>/reports`)."""
    parts = text.strip().split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;").replace(">", "&gt;") for i, part in enumerate(parts))


def on_page_markdown(markdown: str, page: Any, **_kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} has no {MARKER} line for the generated CLI reference")
    from interlink import cli

    return markdown.replace(MARKER, reference(cli.app, cli.__doc__))
