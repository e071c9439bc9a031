"""The dashboard page: one self-contained HTML file (styles, data, Plotly and the app inlined).

The chart library is plotly.js, read from a package installed with the project (never
fetched when the page opens). :func:`library_path` takes the first that exists:

1. the file named by ``NEURON_ENGINE_PLOTLY_JS`` (any plotly.js bundle with scatter, bar and
   heatmap traces);
2. npm's ``plotly.js-cartesian-dist-min`` under ``<venv>/dashboard-js/`` (scripts/setup.sh
   installs it when npm is there): 1.5 MB, about three times faster to start in a browser;
3. ``plotly.min.js`` of the ``plotly`` PyPI package (the ``dashboard`` extra; the Python
   package is never imported): the full 4.8 MB bundle.

By default the library is embedded gzip-compressed (base64) and unpacked in the browser with
``DecompressionStream`` (every current browser); ``compress=False`` embeds it as plain script
for older browsers (the page grows by the bundle's size).

>>> html = render_page({"run": "r", "created": "now", "titles": {}, "panels": {}},
...                    library="window.Plotly = {};")
>>> html.startswith("<!doctype html>"), html.count("<script")
(True, 3)
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from engine.dashboard.errors import DashboardError

TEMPLATES = ("dashboard.html", "dashboard.css", "dashboard.js", "representations.js")


def _template(name: str) -> str:
    return resources.files("engine.dashboard").joinpath("templates", name).read_text("utf-8")


LIBRARY_ENV = "NEURON_ENGINE_PLOTLY_JS"
NPM_BUNDLE = ("dashboard-js", "node_modules", "plotly.js-cartesian-dist-min",
              "plotly-cartesian.min.js")  # fmt: skip


def library_path() -> Path:
    """The plotly.js bundle the page inlines (see the module docstring), or
    :class:`DashboardError` saying how to install one."""
    named = os.environ.get(LIBRARY_ENV)
    if named:
        if not Path(named).is_file():
            raise DashboardError(f"{LIBRARY_ENV}={named}: no such file (a plotly.js bundle)")
        return Path(named)
    npm = Path(sys.prefix).joinpath(*NPM_BUNDLE)
    if npm.is_file():
        return npm
    spec = importlib.util.find_spec("plotly")
    for root in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise DashboardError(
        "the dashboard inlines plotly.js from an installed package and found none: "
        'pip install -e ".[dashboard]" (the plotly package), or run scripts/setup.sh'
    )


def _script_safe(text: str) -> str:
    """Script source that cannot end its ``<script>`` element early (``</script`` inside a
    string or regular expression; ``<!--`` would change how the element is parsed)."""
    if "<!--" in text:
        raise DashboardError("script source with '<!--' cannot be inlined safely")
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


def _json_safe(text: str) -> str:
    """JSON inside ``<script type="application/json">``: every ``<`` as ``\\u003c``."""
    return text.replace("<", "\\u003c")


def _library_tag(library: str, compress: bool) -> str:
    if not compress:
        return f"<script>{_script_safe(library)}</script>"
    packed = base64.b64encode(gzip.compress(library.encode("utf-8"), 9, mtime=0)).decode("ascii")
    return f'<script id="plotly-gz" type="application/octet-stream">{packed}</script>'


def render_page(
    data: dict[str, Any],
    *,
    title: str = "neuron-engine run dashboard",
    compress: bool = True,
    library: str | None = None,
) -> str:
    """The page's HTML for ``data`` (from :func:`engine.dashboard.collect.collect_run`).
    ``library`` replaces Plotly's source (tests)."""
    source = library_path().read_text("utf-8") if library is None else library
    found = re.search(r'v(\d+\.\d+\.\d+)|version:"(\d+\.\d+\.\d+)"', source[:200_000])
    version = next((g for g in found.groups() if g), "") if found else ""
    data = {**data, "library": f"plotly.js {version}".strip()}
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    parts = {
        "TITLE": title.replace("&", "&amp;").replace("<", "&lt;"),
        "CSS": _template("dashboard.css"),
        "DATA": _json_safe(payload),
        "LIBRARY": _library_tag(source, compress),
        "APP": _script_safe(_template("dashboard.js") + "\n" + _template("representations.js")),
    }
    return re.sub(r"@@([A-Z]+)@@", lambda m: parts[m.group(1)], _template("dashboard.html"))
