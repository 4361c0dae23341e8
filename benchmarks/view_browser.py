"""A headless Chromium (Debian's ``chromium``, driven by Playwright) looking at the live view.

Used by `tests/view/test_browser.py` (the panels update during a scan), by
`bench_pipeline.py` (the pipeline's capacity with the page open) and by
`view_screenshot.py` (the figure in docs/session.md). Playwright's own browser download is not
needed: the system Chromium is launched (``chromium`` on the PATH, or ``$CHROMIUM``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

PANEL_STATE_JS = """() => {
  const panels = {};
  for (const el of document.querySelectorAll('.panel')) {
    const img = el.querySelector('img');
    panels[el.id.replace('panel-', '')] = {
      hidden: el.hidden, src: img.getAttribute('src'), width: img.naturalWidth,
      caption: el.querySelector('.caption').textContent };
  }
  return { version: Number(document.body.dataset.version || 0), panels,
           status: document.getElementById('status').textContent,
           note: document.getElementById('decimation').textContent };
}"""


def chromium_path() -> str | None:
    """The system Chromium's executable, or None."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser"
    )


class HeadlessBrowser:
    """``with HeadlessBrowser() as browser: browser.open(url); browser.screenshot(path)``.

    All calls must come from the thread that entered the context (Playwright's sync API).
    """

    def __init__(self, width: int = 1400, height: int = 1000):
        self.size = {"width": width, "height": height}
        self._playwright: Any = None
        self._browser: Any = None
        self.page: Any = None

    def __enter__(self) -> HeadlessBrowser:
        from playwright.sync_api import sync_playwright

        executable = chromium_path()
        if executable is None:
            raise FileNotFoundError("no chromium on the PATH (apt-get install chromium)")
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        self.page = self._browser.new_page(viewport=self.size)
        return self

    def open(self, url: str, timeout_s: float = 30.0) -> None:
        self.page.goto(url, timeout=timeout_s * 1000)

    def state(self) -> dict[str, Any]:
        """The page's update version, each panel's image source / width / caption, status."""
        return self.page.evaluate(PANEL_STATE_JS)

    def wait_for(self, expression: str, timeout_s: float = 60.0) -> None:
        """Wait until a JavaScript expression is true in the page."""
        self.page.wait_for_function(expression, timeout=timeout_s * 1000)

    def screenshot(self, path: str | Path) -> bytes:
        return self.page.screenshot(path=str(path), full_page=True)

    def __exit__(self, *exc: object) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()
