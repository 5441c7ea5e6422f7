"""The Prefect API and UI a command talks to, known without importing Prefect (2 s) where Prefect is not loaded.

Once Prefect is loaded (a run, `interlink serve`), its settings answer. The read-only commands (`runs`, `status`,
`dlq list`, `connectors`) do not load it: for them the environment does, `PREFECT_API_URL` and `PREFECT_UI_URL`
(as `make serve` sets them); a URL set only in a Prefect profile or `prefect.toml` is not seen there, so their
rows carry no UI link and finished runs are not re-checked against the server until the next run.
"""

from __future__ import annotations

import os
import sys


def api_url() -> str | None:
    """The Prefect API configured, if any."""
    if "prefect.settings" in sys.modules:
        from prefect.settings import get_current_settings

        return get_current_settings().api.url
    return os.environ.get("PREFECT_API_URL") or None


def api_at_hand() -> bool:
    """Whether a Prefect API answers without starting a temporary one: one is configured, or this is a flow run."""
    context = sys.modules.get("prefect.context")  # a flow run has loaded it
    return bool(api_url() or (context is not None and context.FlowRunContext.get()))


def ui_url() -> str | None:
    """The Prefect UI: `PREFECT_UI_URL`, or the API's URL without its `/api` (Prefect's own rule for a server)."""
    if "prefect.settings" in sys.modules:
        from prefect.settings import get_current_settings

        url = get_current_settings().ui_url
    else:
        api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
        url = os.environ.get("PREFECT_UI_URL") or (api.removesuffix("/api") if api else None)
    return url.rstrip("/") if url else None
