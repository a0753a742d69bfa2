"""Accessibility: every form control has a label, status colours meet WCAG AA contrast on both
themes, and (in Chromium) the keyboard reaches search and skip link, the theme toggle persists,
and the navigation fits a phone's width."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client

from .conftest import make_deployment, make_model

LABELLED_ATTRS = ("aria-label", "aria-labelledby", "title")
UNLABELLED_TYPES = {"hidden", "submit", "button", "reset", "image"}


class _Controls(HTMLParser):
    """Collects form controls and which of them a <label> names (wrapping or for=)."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict] = []
        self.label_for: set[str] = set()
        self.label_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "label":
            self.label_depth += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        elif tag in ("input", "select", "textarea"):
            if tag == "input" and (a.get("type") or "text") in UNLABELLED_TYPES:
                return
            self.controls.append({"tag": tag, "attrs": a, "wrapped": self.label_depth > 0})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.label_depth = max(0, self.label_depth - 1)

    def unlabelled(self) -> list[dict]:
        return [c for c in self.controls
                if not c["wrapped"] and c["attrs"].get("id") not in self.label_for
                and not any(c["attrs"].get(k) for k in LABELLED_ATTRS)]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/search/?q=churn", "/models/", "/models/churn/",
                                  "/deployments/", "/deployments/churn-prod/", "/tokens/",
                                  "/teams/", "/teams/ml-search/", "/teams/ml-search/quota/",
                                  "/resource-requests/", "/capacity/", "/audit/"])
def test_every_form_control_has_a_label(path, team, admin_user):
    make_deployment(make_model(team, "churn"), "churn-prod")
    client = Client()
    client.force_login(admin_user)
    response = client.get(path)
    assert response.status_code == 200
    parser = _Controls()
    parser.feed(response.content.decode())
    missing = [(c["tag"], c["attrs"].get("name")) for c in parser.unlabelled()]
    assert not missing, f"{path}: controls without a label: {missing}"


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted([_luminance(a), _luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_status_colours_meet_wcag_aa_on_both_themes():
    css = (Path(__file__).resolve().parents[2] / "frontend" / "static" / "frontend"
           / "portal.css").read_text()
    light = dict(re.findall(r"--mp-(ok|warn|bad): (#[0-9a-f]{6})", css.split("\n")[1]))
    dark_rule = next(line for line in css.splitlines() if line.startswith("[data-theme=dark]"))
    dark = dict(re.findall(r"--mp-(ok|warn|bad): (#[0-9a-f]{6})", dark_rule))
    assert set(light) == set(dark) == {"ok", "warn", "bad"}
    for name in light:  # Pico 2's backgrounds: white, and #13171f in dark mode
        assert _contrast(light[name], "#ffffff") >= 4.5, name
        assert _contrast(dark[name], "#13171f") >= 4.5, name


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_keyboard_search_theme_toggle_and_narrow_navigation(live_server, page, screenshot, team,
                                                            engineer):
    from tests.factories import PASSWORD

    make_deployment(make_model(team, "churn-model"), "churn-prod", ready=1, firing=True)
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", engineer.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.get_by_role("heading", name="Dashboard").wait_for()
    screenshot("portal-dashboard")

    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.locator("body").click(position={"x": 5, "y": 400})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "global-search"
    page.keyboard.type("churn")
    page.keyboard.press("Enter")
    page.get_by_role("link", name="churn-model").wait_for()
    assert "/search/?q=churn" in page.url
    screenshot("portal-search")

    page.locator("details.dropdown summary").click()
    page.locator("[data-theme-toggle]").click()
    chosen = page.evaluate("document.documentElement.dataset.theme")
    assert chosen in ("light", "dark")
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == chosen
    assert page.evaluate("localStorage.getItem('theme')") == chosen

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    screenshot(f"portal-dashboard-phone-{chosen}")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
