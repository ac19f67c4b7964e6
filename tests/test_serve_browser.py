"""The web app in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium, no browser
download) against real uvicorn on a free loopback port, over a small index built with the TEST
DOUBLE encoder (tests/doubles.py, not CLAP). Screenshots go to each test's temporary folder.

In CI (CLAPDEX_REQUIRE_BROWSER=1, set by .ci/run) these tests must run: a missing browser or
Playwright fails them instead of skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.serve_fixtures import HOSTILE, VANISHED, build_serve_index, running_server

BROWSERS = ("chromium", "chromium-browser")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--autoplay-policy=no-user-gesture-required"]


def _unavailable(message: str):
    if os.environ.get("CLAPDEX_REQUIRE_BROWSER"):
        pytest.fail(message)  # CI asks for the real browser tests: never skip them there
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if executable is None:
        _unavailable("no Chromium binary found; install it with: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    import clapdex
    from clapdex.server import create_app

    fixture = build_serve_index(tmp_path_factory.mktemp("serve-browser"))
    with clapdex.open_index(fixture.root, encoder=fixture.encoder) as index:
        with running_server(create_app(index)) as base:
            yield base, fixture


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    # The pages must work under their own Content-Security-Policy (no inline script or style).
    page.on("console", lambda message: page.errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    yield page
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()
    assert not page.errors, page.errors


def search(page, base, text):
    page.goto(base + "/")
    page.fill("#q", text)
    page.click("#go")
    page.wait_for_selector(".result")


def _number(text):
    return float(text.replace("\u2212", "-"))


def result_paths(page):
    return page.eval_on_selector_all(".result a.path", "links => links.map(a => a.textContent)")


def test_search_shows_results_with_explanation_bars(page, site, tmp_path):
    base, fixture = site
    search(page, base, "a 500 hz tone")
    assert result_paths(page)[0] == fixture.paths["tone_500.wav"]
    first = page.locator(".result").first
    assert first.locator(".bar .part").count() >= 2
    assert "score" in first.locator(".scores").inner_text()
    # The equation under the bar adds up to the concept score shown in it.
    terms = first.locator(".equation .term").all_inner_texts()
    total = _number(first.locator(".equation b").inner_text().split()[1])
    values = [_number(t.split()[0]) if i == 0 else
              _number(t.split()[1]) * (-1 if t.startswith("\u2212") else 1)
              for i, t in enumerate(terms)]
    assert len(values) >= 2
    assert abs(sum(values) - total) <= 0.005 * (len(values) + 1)
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
    assert (tmp_path / "search.png").stat().st_size > 10_000


def test_low_fidelity_is_flagged_in_words(page, site):
    base, fixture = site
    search(page, base, "a 2500 hz tone")
    noise = page.locator(".result", has=page.locator(f"a.path:text-is('{fixture.paths['noise.wav']}')"))
    assert "explain this clip poorly" in noise.locator(".low").inner_text()


def test_play_starts_at_the_segment_and_stops_at_its_end(page, site, tmp_path):
    base, fixture = site
    ranges = []
    page.on("response", lambda r: ranges.append(r.status) if "/audio" in r.url else None)
    search(page, base, "a 250 hz tone")
    card = page.locator(".result").first
    assert card.locator("a.path").inner_text() == fixture.paths["tone_2000_then_250.wav"]
    assert card.locator(".range").inner_text() == "00:02\u201300:04"
    card.locator("button.play").click()
    page.wait_for_function("() => { const a = document.querySelector('.result audio');"
                           " return a && a.currentTime > 2.05 && a.webkitAudioDecodedByteCount > 0; }",
                           timeout=15_000)
    started = page.evaluate("() => document.querySelector('.result audio').currentTime")
    assert 2.0 <= started < 4.0
    # It pauses by itself at the segment's end (4 s), not at the end of the file.
    page.wait_for_function("() => document.querySelector('.result audio').paused", timeout=15_000)
    stopped = page.evaluate("() => document.querySelector('.result audio').currentTime")
    assert 3.8 <= stopped <= 4.3
    assert 206 in ranges or 200 in ranges
    page.screenshot(path=str(tmp_path / "playing.png"))


def test_keyboard_moves_between_results_and_space_plays(page, site):
    base, _ = site
    search(page, base, "a 500 hz tone")
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("() => document.activeElement.dataset.rank") == "2"
    page.keyboard.press(" ")
    page.wait_for_function("() => { const a = document.activeElement.querySelector('audio');"
                           " return a && !a.paused && a.currentTime > 0; }", timeout=15_000)
    page.keyboard.press(" ")
    assert page.evaluate("() => document.activeElement.querySelector('audio').paused")


def test_steering_concept_changes_the_order(page, site, tmp_path):
    base, fixture = site
    search(page, base, "a 500 hz tone")
    before = result_paths(page)
    assert before[0] == fixture.paths["tone_500.wav"]
    page.fill("#concept", "a 2500")
    page.wait_for_function("() => document.querySelectorAll('#concept-names option').length > 0")
    assert "a 2500 hz tone" in page.eval_on_selector_all("#concept-names option",
                                                         "o => o.map(x => x.value)")
    page.fill("#concept", "a 2500 hz tone")
    page.click("#add-plus")
    page.wait_for_selector(".chip.plus")
    page.wait_for_function(f"() => document.querySelector('.result a.path').textContent === "
                           f"{fixture.paths['tone_500_2500.wav']!r}")
    assert result_paths(page) != before
    page.screenshot(path=str(tmp_path / "steered.png"), full_page=True)
    # Flip it to minus: the 2500 Hz file drops below the pure 500 Hz tone.
    page.click(".chip .sign")
    page.wait_for_selector(".chip.minus")
    page.wait_for_function(f"() => document.querySelector('.result a.path').textContent === "
                           f"{fixture.paths['tone_500.wav']!r}")


def test_audit_expression_and_its_error_position(page, site, tmp_path):
    base, _ = site
    page.goto(base + "/audit")
    page.wait_for_selector("#prevalence tbody tr")
    page.fill("#expr", "speech AND NOT \"a 500 hz tone\"")
    page.click("#expr-form button")
    page.wait_for_selector("#expr-result .count")
    assert "match" in page.inner_text("#expr-result .count")
    assert page.locator("#expr-result tbody tr").count() > 0
    page.fill("#expr", "speech AND (dog barking")
    page.click("#expr-form button")
    page.wait_for_selector("#expr-error .error")
    assert "unclosed" in page.inner_text("#expr-error .error")
    assert page.inner_text("#expr-error mark") == "("
    # Prevalence sorts by another column on click.
    page.click("#prevalence [data-sort=weight]")
    page.wait_for_selector("#prevalence [data-sort=weight].active")
    assert page.locator("#failed tbody tr").count() == 1
    page.screenshot(path=str(tmp_path / "audit.png"), full_page=True)


def test_file_page_from_a_result(page, site, tmp_path):
    base, fixture = site
    search(page, base, "a 250 hz tone")
    page.locator(".result a.path").first.click()
    page.wait_for_selector("#segments tbody tr")
    assert page.inner_text("h1") == fixture.paths["tone_2000_then_250.wav"]
    assert page.locator("#segments tbody tr").count() == 2
    assert page.locator("#timeline svg rect").count() >= 2
    page.wait_for_selector("#similar li")
    page.screenshot(path=str(tmp_path / "file.png"), full_page=True)


def test_vanished_file_says_file_missing(page, site):
    base, fixture = site
    search(page, base, "a 1000 hz tone")
    card = page.locator(".result", has=page.locator(
        f"a.path:text-is('{fixture.paths[VANISHED]}')"))
    card.locator("button.play").click()
    card.locator(".error").wait_for()
    assert "file missing" in card.locator(".error").inner_text()
    card.locator("a.path").click()
    page.wait_for_selector("#file-head .error")
    assert "File missing" in page.inner_text("#file-head .error")
    assert page.locator("#segments tbody tr").count() == 1  # its concepts are still shown


def test_hostile_file_name_renders_as_text(page, site, tmp_path):
    base, fixture = site
    search(page, base, "a 1500 hz tone")
    assert fixture.paths[HOSTILE] in result_paths(page)
    assert page.locator(".result img").count() == 0
    assert page.evaluate("() => window.__xss") is None
    page.goto(base + "/audit?expression=" + "%22a%201500%20hz%20tone%22")
    page.wait_for_selector("#expr-result tbody tr")
    assert HOSTILE in page.inner_text("#expr-result")
    assert page.locator("main img").count() == 0
    assert page.evaluate("() => window.__xss") is None
    page.screenshot(path=str(tmp_path / "hostile.png"), full_page=True)


def test_phone_width_has_no_horizontal_scroll(browser, site, tmp_path):
    base, _ = site
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    page.goto(base + "/?text=a%20500%20hz%20tone")
    page.wait_for_selector(".result")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    context.close()
    assert width <= 390


def test_search_by_example_upload_and_more_like_this(page, site):
    base, fixture = site
    page.goto(base + "/")
    page.set_input_files("#upload", fixture.paths["tone_500_2500.wav"])
    page.wait_for_selector(".result")
    assert "sounds like" in page.inner_text("#query-info")
    assert result_paths(page)[0] == fixture.paths["tone_500_2500.wav"]
    # More like this on the third result: its file becomes the query (stored embeddings).
    third = page.locator(".result").nth(2)
    wanted = third.locator("a.path").inner_text()
    third.locator("button.similar").click()
    page.wait_for_function(f"() => document.querySelector('#query-info').textContent.includes({wanted!r})")
    assert result_paths(page) and wanted not in result_paths(page)  # the query file is left out
    assert "similar=" in page.url
