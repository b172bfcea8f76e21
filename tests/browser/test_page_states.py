"""Class checks: what a person sees in a second, on every page-state at five common screens.

For each page-state of `page_states.PAGE_STATES` (every page a shopper or operator sees, in
each state it can be in), at 375×667, 768×1024, 1280×800, 1366×768 and 1920×1080:

- no two elements meant as alternatives (state icons, state headings, banners) are visible
  at once, and exactly one h1 is;
- nothing interactive is covered by a fixed or sticky element, when the page loads or after
  scrolling to it;
- the page doesn't scroll sideways; no id, date or email is broken mid-word (unless it is
  wider than its line on its own) or cut off;
- the words saying where things stand (the heading, the window title, the live status line)
  agree: one page never says "Confirming your payment" and "Awaiting payment";
- a link's underscores stay clear of its underline;
- axe-core's WCAG 2.1 A and AA rules find nothing (at 375 and 1280 px, with JavaScript on).

Each page-state at each width is saved as `artifacts/page-states/<page>-<state>-<width>.png`.
All page-states share one server (SQLite) and one browser; each gets its own browser context.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import LiveShop, serving
from tests.browser.page_states import ASYNC_DELAY, OPERATOR, PAGE_STATES, PageState, Visit
from tests.browser.test_quality import AXE, WCAG_21_AA

SCREENS = ((375, 667), (768, 1024), (1280, 800), (1366, 768), (1920, 1080))
FOLDER = Path(__file__).resolve().parents[2] / "artifacts" / "page-states"
CHECKS_JS = (Path(__file__).parent / "class_checks.js").read_text()

# What words about a payment say, strongest first: a text's tone is the first that matches.
TONES = (
    ("not paid", re.compile(r"not completed|failed|expired|cancell?ed|declined|nothing was charged|unavailable", re.I)),
    ("unpaid", re.compile(r"awaiting payment", re.I)),
    ("in progress", re.compile(r"confirming|processing|waiting|in progress|on its way", re.I)),
    ("paid", re.compile(r"\bpaid\b|payment received|refunded", re.I)),
)


def tone(text: str) -> str | None:
    return next((name for name, words in TONES if words.search(text)), None)


@pytest.fixture(scope="module")
def shared_shop(sqlite_template: str, tmp_path_factory) -> Iterator[LiveShop]:
    path = tmp_path_factory.mktemp("page-states") / "shop.sqlite"
    shutil.copy(sqlite_template, path)
    with serving(
        f"sqlite:///{path}",
        ADMIN_USERNAME=OPERATOR[0],
        ADMIN_PASSWORD=OPERATOR[1],
        STRIPE_EMULATOR_ASYNC_DELAY=ASYNC_DELAY,
    ) as shop:
        yield shop


@pytest.fixture(scope="module", autouse=True)
def fresh_folder() -> None:
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir(parents=True)


def problems_at(page: Page, width: int, javascript: bool) -> list[str]:
    page.evaluate(f"window.__classChecks = {CHECKS_JS}")
    problems = [*page.evaluate("__classChecks.alternatives()")]
    headings = page.locator("h1:visible").count()
    if headings != 1:
        problems.append(f"{headings} visible h1 elements")
    problems += page.evaluate("__classChecks.sideways()")
    problems += page.evaluate("__classChecks.covered()")
    problems += page.evaluate("__classChecks.brokenOrClipped()")
    problems += disagreements(page.evaluate("__classChecks.statusWords()"))
    problems += page.evaluate("__classChecks.underscoresOnUnderline()")
    # axe-core schedules its work with timers, which don't run with JavaScript off.
    if javascript and width in (375, 1280):
        results = AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG_21_AA}, "resultTypes": ["violations"]})
        if results.violations_count:
            problems.append(results.generate_report())
    return problems


def disagreements(words: dict) -> list[str]:
    """The heading's tone against the window title's and each live status line's."""
    heading_tone = tone(words["heading"])
    if heading_tone is None:
        return []
    others = [words["title"], *words["statuses"]]
    return [
        f'"{text}" ({tone(text)}) contradicts the heading "{words["heading"]}" ({heading_tone})'
        for text in others
        if tone(text) not in (None, heading_tone)
    ]


@pytest.mark.parametrize("state", PAGE_STATES, ids=[state.name for state in PAGE_STATES])
def test_page_state_passes_the_class_checks(state: PageState, browser: Browser, shared_shop: LiveShop):
    width, height = SCREENS[0]
    context = browser.new_context(
        viewport={"width": width, "height": height},
        java_script_enabled=state.javascript,
        http_credentials={"username": OPERATOR[0], "password": OPERATOR[1]} if state.operator else None,
    )
    context.set_default_timeout(10_000)
    visit = Visit(shared_shop, context, context.new_page())
    try:
        state.reach(visit)
        heading = visit.page.locator("h1:visible").first.inner_text()
        assert heading.startswith(state.heading), f"{state.name} shows {heading!r}, not {state.heading!r}"
        found = {}
        for width, height in SCREENS:
            visit.page.set_viewport_size({"width": width, "height": height})
            problems = problems_at(visit.page, width, state.javascript)
            # A window as tall as the page, so what sticks to the bottom of the screen is drawn
            # where it ends up, not where the window's bottom happened to be.
            visit.page.set_viewport_size({"width": width, "height": visit.page.evaluate("document.documentElement.scrollHeight")})
            visit.page.screenshot(path=str(FOLDER / f"{state.name}-{width}.png"), animations="disabled")
            if problems:
                found[f"{width}x{height}"] = problems
        assert not found, f"{state.name}:\n" + "\n".join(
            f"  at {screen}: {problem}" for screen, problems in found.items() for problem in problems
        )
    finally:
        context.close()
        for cleanup in visit.cleanups:
            cleanup()
