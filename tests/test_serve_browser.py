"""The trace viewer in headless Chromium (Debian's package, driven by Playwright): ask a question,
wait for the answer, check that tokens, retrieval markers and passages render; save a screenshot.

Chromium comes from ``scripts/install-browser.sh`` (run here if the binary is missing); never
``playwright install``, which downloads a browser build of its own.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTION = "In what year was the director of Jaws born?"


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "install-browser.sh")], check=False, timeout=900)
        path = shutil.which("chromium")
    assert path, "Debian's chromium is missing: run scripts/install-browser.sh (apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def server(lm):
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.serve.app import create_app
    from dynaprag.serve.server import ServerThread

    # two retrievals: FLARE's first one is the question's, its second cuts a look-ahead sentence
    pipeline = Pipeline.from_config(PipelineConfig(dtype="float32", max_retrievals=2), lm=lm)
    with ServerThread(create_app(pipeline, max_queue=2)) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_viewer_shows_tokens_markers_and_passages(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='dragin']", state="attached")
    assert page.input_value("#method") == "dragin"

    page.fill("#question", QUESTION)
    page.select_option("#method", "dragin")
    page.fill("#max-tokens", "40")
    page.fill("#options", '{"theta": 0.0}')  # RIND fires at once: a marker inside the answer
    page.click("#ask")
    page.wait_for_selector("#stats:not(:empty)", timeout=240_000)
    assert not page.is_visible("#error"), page.inner_text("#error")

    tokens = page.locator("#answer .tok")
    markers = page.locator("#answer .marker")
    assert tokens.count() > 0 and markers.count() >= 1
    assert page.inner_text("#answer").strip()
    for mode in ("entropy", "prob"):
        page.select_option("#shade", mode)
        shaded = page.eval_on_selector_all("#answer .tok", "ns => ns.map(n => getComputedStyle(n).backgroundColor)")
        assert len(shaded) == tokens.count() and len(set(shaded)) > 1, f"tokens are shaded by {mode}"

    retrievals = page.locator("#retrievals .retrieval")
    assert retrievals.count() == markers.count()
    assert page.locator("#retrievals .query").first.inner_text().strip()
    passages = page.locator("#retrievals .passage")
    assert passages.count() >= 1 and passages.first.inner_text().strip()

    markers.first.click()
    assert "active" in (retrievals.first.get_attribute("class") or "")

    shot = tmp_path / "trace-viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert errors == []
    page.close()


@pytest.mark.parametrize("method", ["dragin", "flare"])
def test_viewer_shows_the_discarded_draft_shaded_by_the_scores_that_fired(server, browser, method, tmp_path):
    """Under the default "Shade by: trigger score", DRAGIN's and FLARE's scores belong to the
    look-ahead they discard: the viewer shows it at its marker, struck through and shaded, with the
    firing sentence marked, so the query no longer appears from nowhere."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector(f"#method option[value='{method}']", state="attached")
    page.fill("#question", QUESTION)
    page.select_option("#method", method)
    page.fill("#max-tokens", "40")
    page.click("#ask")
    page.wait_for_selector("#stats:not(:empty)", timeout=240_000)
    assert not page.is_visible("#error"), page.inner_text("#error")
    assert page.input_value("#shade") == "score"

    discarded = page.locator("#answer .discarded")
    assert discarded.count() >= 1, "the discarded draft is shown at its retrieval marker"
    # it follows a marker of the same retrieval
    follows = page.eval_on_selector_all(
        "#answer .discarded",
        "ns => ns.map(n => n.previousElementSibling && n.previousElementSibling.classList.contains('marker') "
        "&& n.previousElementSibling.dataset.retrieval === n.dataset.retrieval)")
    assert all(follows)
    assert "line-through" in page.eval_on_selector("#answer .discarded", "n => getComputedStyle(n).textDecorationLine")
    fired = page.locator("#answer .discarded .fired")
    assert fired.count() >= 1 and fired.first.inner_text().strip()
    alphas = page.eval_on_selector_all(
        "#answer .discarded .tok",
        "ns => ns.map(n => { const m = getComputedStyle(n).backgroundColor.match(/rgba?\\(([^)]*)\\)/); "
        "const parts = m ? m[1].split(',') : []; return parts.length === 4 ? Number(parts[3]) : 1; })")
    assert max(alphas) > 0.2, "the trigger's scores shade the discarded tokens"
    assert "the trigger scored no token" not in page.inner_text("#legend")
    assert "fired on" in page.inner_text("#retrievals")
    page.screenshot(path=str(tmp_path / f"discarded-{method}.png"), full_page=True)
    assert errors == []
    page.close()


def test_viewer_reports_a_bad_request(server, browser):
    page = browser.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#method option", state="attached")
    page.fill("#question", QUESTION)
    page.fill("#options", '{"no_such_knob": 1}')
    page.click("#ask")
    page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    assert "400" in page.inner_text("#error") and "no_such_knob" in page.inner_text("#error")
    page.close()
