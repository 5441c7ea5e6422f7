"""Screenshot a page after clicking a button, in headless Chromium driven over the DevTools protocol.

`python docs/click_screenshot.py URL BUTTON_TEXT OUT.png [WIDTH,HEIGHT]`: opens URL, waits for a button whose
text is BUTTON_TEXT, clicks it, waits for a dialog, and saves a screenshot. Used by make_ui_screenshots.sh
for the approval form, which the Prefect UI shows only in a dialog behind the run's Resume button.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

FIND = """[...document.querySelectorAll('button')].find(b => b.textContent.trim() === %s)"""


def main(url: str, button: str, out: Path, size: str = "1440,1100") -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    profile = tempfile.mkdtemp()
    browser = subprocess.Popen(
        [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--remote-debugging-port={port}", f"--window-size={size}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        target = until(lambda: next(t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                                    if t["type"] == "page"), 30, "Chromium's DevTools")
        with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            ids = itertools.count(1)

            def call(method: str, **params):
                ws.send(json.dumps({"id": (n := next(ids)), "method": method, "params": params}))
                while (message := json.loads(ws.recv())).get("id") != n:
                    pass
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

            def evaluate(expression: str):
                return call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

            call("Page.navigate", url=url)
            until(lambda: evaluate(f"!!({FIND % json.dumps(button)})"), 60, f"a {button!r} button")
            evaluate(f"({FIND % json.dumps(button)}).click()")
            until(lambda: evaluate("!!document.querySelector('[role=dialog]')"), 30, "the dialog")
            time.sleep(1.5)  # the dialog's fade-in animation; nothing to poll for
            out.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
    finally:
        browser.terminate()
        browser.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


def until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if found := condition():
                return found
        except (OSError, StopIteration):
            pass
        time.sleep(0.3)
    sys.exit(f"click_screenshot: no {what} within {timeout_s}s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), *sys.argv[4:])
