"""The documentation site as readers get it: built strictly from docs/, served over HTTP, opened in headless
Chromium. The home page has its search box, the Performance page its charts, each fetched by the browser; a
screenshot of the Performance page is kept under .run/."""

import http.server
import shutil
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHARTS = sorted(path.name for path in (ROOT / "docs/charts").glob("*.png"))
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (apt-get install chromium; "
                                                        "make test installs it)")


class Recording(http.server.SimpleHTTPRequestHandler):
    """Serves the built site and remembers every path asked for, with its status."""

    served: list[tuple[str, int]]

    def log_request(self, code="-", size="-"):
        self.served.append((self.path, int(code)))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    built = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)], cwd=ROOT,
                   check=True, capture_output=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    served: list[tuple[str, int]] = []
    handler = type("Handler", (Recording,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(built)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()


def browse(url: str, *arguments: str) -> str:
    """The page's DOM after its scripts ran (headless Chromium, a virtual-time budget for them)."""
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
                           *arguments, url], capture_output=True, text=True, timeout=120).stdout


def test_the_home_page_renders_with_its_search_box_and_the_search_index_loads(site):
    url, served = site
    dom = browse(f"{url}/", "--dump-dom")
    assert 'class="md-search__input"' in dom and "Getting started" in dom
    assert ("/search/search_index.json", 200) in served, "the search worker never fetched its index"


def test_the_performance_page_renders_every_chart_and_is_captured(site):
    url, served = site
    assert CHARTS, "docs/charts holds no chart: run python -m bench.charts on a report"
    dom = browse(f"{url}/performance/", "--dump-dom")
    for chart in CHARTS:
        assert f'src="../charts/{chart}"' in dom, chart
        assert (f"/charts/{chart}", 200) in served, f"the browser did not fetch {chart}"
    screenshot = ROOT / ".run/performance.png"
    screenshot.parent.mkdir(exist_ok=True)
    screenshot.unlink(missing_ok=True)
    browse(f"{url}/performance/", f"--screenshot={screenshot}", "--window-size=1280,2600", "--hide-scrollbars")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000
