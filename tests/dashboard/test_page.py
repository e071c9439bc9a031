"""The page is one self-contained file: the chart library is the installed plotly.min.js
(bit for bit, compressed or not), nothing is loaded from elsewhere, the data round-trips, and
names cannot break out of their script element."""

from __future__ import annotations

import base64
import gzip
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.cli import main
from engine.dashboard import DashboardError, collect_run, render_page, write_dashboard
from engine.dashboard.page import library_path

pytestmark = pytest.mark.usefixtures("plotly_installed")


def _data(html: str) -> dict:
    found = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>',
                      html, re.S)  # fmt: skip
    assert found is not None
    return json.loads(found.group(1))


def test_page_embeds_plotly_and_the_data_and_loads_nothing(run_dir: Path, tmp_path) -> None:
    page = write_dashboard(run_dir, tmp_path / "report.html")
    html = page.read_text()
    packed = re.search(r'<script id="plotly-gz" type="application/octet-stream">(.*?)</script>',
                       html, re.S)  # fmt: skip
    assert packed is not None
    assert gzip.decompress(base64.b64decode(packed.group(1))) == library_path().read_bytes()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    data = _data(html)
    expected = collect_run(run_dir)
    assert data["panels"] == json.loads(json.dumps(expected["panels"]))
    assert page.stat().st_size < 5e6


def test_uncompressed_page_inlines_the_library_as_script(run_dir: Path, tmp_path) -> None:
    html = write_dashboard(run_dir, tmp_path / "raw.html", compress=False).read_text()
    assert 'id="plotly-gz"' not in html
    assert library_path().read_text()[:2000].replace("</script", "<\\/script") in html


def test_names_cannot_close_the_script_element() -> None:
    evil = "</script><script>alert(1)</script><!--"
    data = {"run": evil, "created": "", "titles": {}, "panels": {"timeline": {"note": evil}}}
    html = render_page(data, title=evil, library="window.Plotly = {};")
    scripts = []

    class Scripts(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "script":
                scripts.append(dict(attrs).get("id"))

    Scripts().feed(html)
    assert scripts == ["dashboard-data", "plotly-gz", None]  # data, library, app: no more
    assert "<title>&lt;/script>" in html
    assert _data(html)["panels"]["timeline"]["note"] == evil


def test_cli_writes_the_page_and_reports_bad_folders(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli.html"
    assert main(["dashboard", str(run_dir), "-o", str(out)]) == 0
    assert out.is_file() and "dashboard written to" in capsys.readouterr().out
    assert main(["dashboard", str(tmp_path / "missing")]) == 2
    assert "missing: no such run folder" in capsys.readouterr().err
    assert main(["dashboard", str(tmp_path), "--strict"]) == 2  # no run files at all
    assert "not a run folder" in capsys.readouterr().err


def test_the_library_named_by_the_environment_is_inlined(run_dir, tmp_path, monkeypatch) -> None:
    bundle = tmp_path / "plotly.js"
    bundle.write_text("window.Plotly = {react() {}};")
    monkeypatch.setenv("NEURON_ENGINE_PLOTLY_JS", str(bundle))
    assert library_path() == bundle
    html = write_dashboard(run_dir, tmp_path / "env.html", compress=False).read_text()
    assert "<script>window.Plotly = {react() {}};</script>" in html
    monkeypatch.setenv("NEURON_ENGINE_PLOTLY_JS", str(tmp_path / "nothing.js"))
    with pytest.raises(DashboardError, match=r"NEURON_ENGINE_PLOTLY_JS=.*nothing\.js: no such"):
        write_dashboard(run_dir, tmp_path / "none.html")


def test_weights_verb_prints_the_change_of_a_tracking_folder(run_dir, tmp_path, capsys) -> None:
    from engine.weights import SnapshotStore, compare_snapshots

    assert main(["weights", str(run_dir), "--top", "2"]) == 0
    out = capsys.readouterr().out
    snaps = SnapshotStore(run_dir / "weights").snapshots()
    total = compare_snapshots(snaps[0], snaps[-1]).total.relative
    assert f"relative change {total:.4f}" in out
    assert "(top 2 layers of 5)" in out and len(out.splitlines()) == 2 + 5 + 2 + 1 + 8
    assert main(["weights", str(tmp_path)]) == 2
    assert "0 snapshot(s)" in capsys.readouterr().err
