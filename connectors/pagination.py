"""Pagination strategies behind one small protocol.

A paginator reads each response body (`update_state`), says whether another page
exists (`has_next_page`) and sets the query parameters for it (`update_params`).
A paginator carries state, so each run makes its own.
"""

from typing import Any, Protocol

from connectors.errors import PaginationLoop


class Paginator(Protocol):
    has_next_page: bool

    def update_state(self, body: Any) -> None: ...

    def update_params(self, params: dict[str, Any]) -> dict[str, Any]: ...


class CursorPaginator:
    """The body names the next page's cursor; it goes back as a query parameter.

    Stops when the cursor is null or missing. A cursor seen before is a loop and fails.
    Start from `cursor` to resume a run where an earlier chunk stopped.
    """

    def __init__(self, cursor_field: str = "next_cursor", cursor_param: str = "cursor", cursor: str | None = None):
        self.cursor_field = cursor_field
        self.cursor_param = cursor_param
        self.cursor = cursor
        self.has_next_page = True
        self._seen: set[str] = {cursor} if cursor else set()

    def update_state(self, body: Any) -> None:
        cursor = body.get(self.cursor_field) if isinstance(body, dict) else None
        if cursor in self._seen:
            raise PaginationLoop(f"the source repeated cursor {cursor!r} after {len(self._seen)} pages")
        self.cursor = cursor
        self.has_next_page = cursor is not None
        if cursor is not None:
            self._seen.add(cursor)

    def update_params(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.cursor is None:
            return params
        return {**params, self.cursor_param: self.cursor}
