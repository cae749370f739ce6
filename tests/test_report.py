"""`dasd-local view --html`: the report rendered by a real headless Chromium (Debian's
`chromium` package): one coloured span per response token with its category's class, the
hover tooltip with the candidates, the filters, and a screenshot. Data: a real generate +
verify run (tests/conftest.py: arc_run)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from dasd_local.cli import app

pytestmark = pytest.mark.slow  # the fixture decodes 6 problems with the real model
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install chromium)")


def browser(*args) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class Spans(HTMLParser):
    """Per problem (by data-index), the class of every token span of its response, in order;
    and the text of the tooltip."""

    def __init__(self):
        super().__init__()
        self.problems: dict[int, list[str]] = {}
        self.current = None
        self.in_tip = 0
        self.tip: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "problem" in (a.get("class") or ""):
            self.current = int(a["data-index"])
            self.problems[self.current] = []
        if tag == "span" and "data-i" in a:
            assert int(a["data-i"]) == len(self.problems[self.current])
            self.problems[self.current].append(a["class"])
        if a.get("id") == "tip" or self.in_tip:
            self.in_tip += 1

    def handle_endtag(self, tag):
        if self.in_tip:
            self.in_tip -= 1

    def handle_data(self, data):
        if self.in_tip:
            self.tip.append(data)


def dom(html_path, fragment="") -> Spans:
    p = browser("--dump-dom", html_path.as_uri() + fragment)
    assert p.returncode == 0, p.stderr
    parser = Spans()
    parser.feed(p.stdout)
    return parser


@pytest.fixture(scope="module")
def report(arc_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = CliRunner().invoke(app, ["view", str(arc_run["mixed"]), "--html", str(out)])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in arc_run["mixed"].read_text().splitlines()]
    return out, records


def test_report_is_self_contained(report):
    html = report[0].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing from the network
    assert "data:image/png;base64," in html  # the stats plots, inline


@needs_browser
def test_one_coloured_span_per_token_with_its_category_class(report, tmp_path):
    path, records = report
    spans = dom(path)
    assert sorted(spans.problems) == list(range(len(records)))
    for i, rec in enumerate(records):
        assert spans.problems[i] == [f"tok cat-{s['category']}" for s in rec["steps"]], rec["id"]
    shot = tmp_path / "report.png"
    p = browser("--window-size=1100,800", f"--screenshot={shot}", path.as_uri() + "#hover=0:3")
    assert p.returncode == 0 and shot.stat().st_size > 10_000, p.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_browser
def test_hover_shows_the_candidates_with_p_r_p_b_and_rank(report, model_path):
    from dasd_local.decoding.engine import Engine, EngineConfig

    path, records = report
    step = next((i, s) for i, s in enumerate(records[0]["steps"]) if s["category"] != "consistent")
    tip = "".join(dom(path, f"#hover=0:{step[0]}").tip)
    s = step[1]
    assert f"p_B {round(s['p_base'], 4)}" in tip and f"p_R {round(s['p_ref'], 4)}" in tip and f"rank {s['ref_rank']}" in tip
    with Engine(model_path, EngineConfig(n_ctx=64, n_seq_max=1, n_threads=1)) as engine:
        for token, p_ref, p_base in s["candidates"]:
            assert json.dumps(engine.token_text(token).decode("utf-8", "replace")) in tip
            assert str(round(p_ref, 4)) in tip and str(round(p_base, 4)) in tip


@needs_browser
def test_filters_by_verification_and_category(report):
    path, records = report
    correct = [i for i, r in enumerate(records) if r["correct"]]
    assert sorted(dom(path, "#ver=true").problems) == correct
    assert sorted(dom(path, "#ver=false").problems) == [i for i in range(len(records)) if i not in correct]
    hard = [i for i, r in enumerate(records) if any(s["category"] == "hard" for s in r["steps"])]
    assert sorted(dom(path, "#cat=hard").problems) == hard


def test_large_runs_are_paged(report, tmp_path):
    """A 60-problem file renders 25 problems per page, and the last page holds the rest."""
    from dasd_local.reporting.html import PAGE_SIZE, write_report

    _, records = report
    many = [{**records[i % len(records)], "id": f"p{i}"} for i in range(60)]
    src = tmp_path / "many.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in many))
    totals = write_report(src, tmp_path / "many.html")
    assert totals["problems"] == 60 and totals["tokens"] == sum(len(r["steps"]) for r in many)
    if BROWSER:
        assert len(dom(tmp_path / "many.html").problems) == PAGE_SIZE
        assert sorted(dom(tmp_path / "many.html", "#page=3").problems) == list(range(2 * PAGE_SIZE, 60))


def test_markup_in_tokens_stays_text(report, tmp_path):
    """Token text such as '</script><!--' cannot end the embedded data or inject markup."""
    from dasd_local.reporting.html import write_report

    _, records = report
    rec = {**records[0], "steps": [{**records[0]["steps"][0], "text": "</script><!--<b>x</b>"}, *records[0]["steps"][1:]]}
    src = tmp_path / "markup.jsonl"
    src.write_text(json.dumps(rec) + "\n")
    write_report(src, tmp_path / "markup.html")
    html = (tmp_path / "markup.html").read_text()
    data = re.search(r'<script type="application/json" id="dasd-data">(.*?)</script>', html, re.S).group(1)
    assert json.loads(json.loads(data)["problems"][0]["steps"])[0][0] == "</script><!--<b>x</b>"
    if BROWSER:
        assert dom(tmp_path / "markup.html").problems[0][0] == f"tok cat-{rec['steps'][0]['category']}"
