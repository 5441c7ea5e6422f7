"""Data Docs that render offline: Great Expectations' pages load Bootstrap, jQuery, Font Awesome and Vega from
CDNs, and their logo from GX's S3 bucket with the project's id, so without a network they show bare (and with
one, they report each view). `make_offline` copies the vendored files (`docs_assets/`, see its README) into the
site and points each page at them, and the logo at the site's own copy. An address it does not know is left as
it is and returned, for a warning (a test fails on it: great-expectations changed its templates).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ASSETS = Path(__file__).with_name("docs_assets")
VENDOR = Path("static") / "vendor"  # in the Data Docs site
# Every script and stylesheet address in the Data Docs templates of great-expectations 1.x → its vendored copy.
VENDORED = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": "bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": "bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": "bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.min.js",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed.min.js",
}
GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"  # the same images are in the site's static/images
# A script, stylesheet or image tag's address; `integrity` and `crossorigin` go too: a file:// page cannot make CORS requests.
_TAG = re.compile(r"""<(script|link|img)\b[^>]*?\b(src|href)=["'](https?://[^"']+)["'][^>]*>""", re.IGNORECASE)
_CORS = re.compile(r"""\s(?:integrity|crossorigin)=["'][^"']*["']""", re.IGNORECASE)


def make_offline(site: Path, pages: list[Path]) -> set[str]:
    """Copy the vendored assets into `site` (once) and point `pages` (HTML files in it) at them; returns the
    addresses that have no local copy."""
    vendor, unknown = site / VENDOR, set()
    if not (vendor / "README.md").is_file():
        shutil.copytree(ASSETS, vendor, dirs_exist_ok=True)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        local = _TAG.sub(lambda tag: _local(tag, page, site, unknown), text)
        if local != text:
            page.write_text(local, encoding="utf-8")
    return unknown


def _local(tag: re.Match, page: Path, site: Path, unknown: set[str]) -> str:
    url = tag[3]
    if url.startswith(GX_IMAGES):
        copy = site / "static" / "images" / url.removeprefix(GX_IMAGES).split("?")[0]
    elif url in VENDORED:
        copy = site / VENDOR / VENDORED[url]
    else:
        unknown.add(url)
        return tag[0]
    return _CORS.sub("", tag[0].replace(url, Path(os.path.relpath(copy, page.parent)).as_posix()))
