"""The documentation site builds with `mkdocs build --strict`, and its reference pages cover the library and the CLI.

The commands and the paginators are taken from the code here, so a new command or paginator without its
documentation fails this test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from interlink.connectors.pagination import PAGINATORS

from interlink.cli import app
from interlink.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mkdocs.yml"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(CONFIG), "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return site


def nav_pages(items: list) -> list[str]:
    pages = []
    for item in items:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def page(site: Path, source: str) -> str:
    """The HTML that `source` (a path under docs/, e.g. reference/cli.md) was built into."""
    built = site / "index.html" if source == "index.md" else site / source.removesuffix(".md") / "index.html"
    return built.read_text(encoding="utf-8")


def cli_commands() -> list[tuple[str, list[str]]]:
    """Every command path of the typer app, plugin commands too, with its option names (help left out)."""
    found = []

    def walk(command, ctx) -> None:
        options = [opt for param in command.get_params(ctx) if param.name != "help" and not param.hidden
                   for opt in param.opts if opt.startswith("-")]
        found.append((ctx.command_path, options))
        for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
            sub = command.get_command(ctx, name)
            if not sub.hidden:
                walk(sub, sub.context_class(sub, info_name=name, parent=ctx))

    root = typer.main.get_command(app)
    walk(root, root.context_class(root, info_name="interlink"))
    return found


def test_every_nav_page_is_built(site: Path) -> None:
    sources = nav_pages(yaml.safe_load(CONFIG.read_text())["nav"])
    assert len(sources) >= 30
    for source in sources:
        assert "<h1" in page(site, source), source


def test_cli_reference_has_every_command_and_option(site: Path) -> None:
    html = page(site, "reference/cli.md")
    commands = cli_commands()
    assert {"interlink run", "interlink dlq replay", "interlink demo run", "interlink consume"} <= {path for path, _ in commands}
    for path, options in commands:
        section = html.split(f'id="{path.replace(" ", "-")}"', 1)
        assert len(section) == 2, f"{path} is not in the CLI reference"
        body = re.split(r"<h[1-4]", section[1], maxsplit=1)[0]
        for option in options:
            assert f"<code>{option}</code>" in body, f"{path} {option} is not in the CLI reference"


def test_reference_pages_document_the_api(site: Path) -> None:
    html = "".join(page(site, f"reference/{name}.md") for name in ("sources", "targets", "paginators", "checks", "settings", "pipeline"))
    paginators = [f"{cls.__module__}.{cls.__qualname__}" for cls in PAGINATORS.values()]
    assert len(paginators) == len(PAGINATORS) >= 7
    for path in ["interlink.tasks.ingest.RestSource", "interlink.tasks.ingest.SqlSource", "interlink.tasks.ingest.FolderSource",
                 "interlink.tasks.deliver.SqlTarget", "interlink.tasks.send.RestTarget", *paginators,
                 "interlink.data_checks.policy.Gate", "interlink.data_checks.policy.SchemaContract", "interlink.settings.Settings",
                 "interlink.flows.pipeline.Pipeline", "interlink.tasks.enrich.Lookup"]:
        assert f'id="{path}"' in html, f"{path} has no reference entry"
    for kind, cls in PAGINATORS.items():  # the registry's `type` names, each beside its class
        assert f"<code>{kind}</code>" in html and cls.__name__ in html


def test_settings_page_names_every_variable(site: Path) -> None:
    html = page(site, "reference/settings.md")
    for field in Settings.model_fields:
        if field != "connections":  # INTERLINK_<NAME>__<FIELD>, a row of its own
            assert f"INTERLINK_{field.upper()}" in html, field
    assert "INTERLINK_&lt;NAME&gt;__&lt;FIELD&gt;" in html


def test_the_measured_figures_are_on_the_site_and_the_readme_links_them(site: Path) -> None:
    assert "0.898 at 1M rows" in page(site, "measured.md")
    assert "docs/measured.md" in (ROOT / "README.md").read_text(encoding="utf-8")
