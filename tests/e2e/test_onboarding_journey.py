"""A platform engineer onboards someone, in Chromium, by clicking only: creates the user, adds
them to a team by typing part of their name and picking them, and the new user follows the
welcome link, sets a password, signs in and sees the team."""

from __future__ import annotations

import re

import pytest

from teams.models import AuditEvent, Membership
from tests.e2e.conftest import ARTIFACTS
from tests.factories import PASSWORD, AdminFactory, TeamFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "tulip-orbit-cobalt-42"


def _sign_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def test_admin_creates_a_user_who_sets_a_password_and_sees_the_team(live_server, browser, page,
                                                                    screenshot):
    AdminFactory(username="root")
    TeamFactory(slug="ml-search", name="ML Search")
    base = live_server.url

    _sign_in(page, base, "root", PASSWORD)
    page.get_by_role("link", name="Users", exact=True).click()
    page.get_by_role("heading", name="Create a user").wait_for()
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Email").fill("dana@corp.example")
    page.get_by_label("First name").fill("Dana")
    page.get_by_label("Last name").fill("Scully")
    page.get_by_label("Give them a one-time link to set their password").check()
    screenshot("onboarding-01-create-user")
    page.get_by_role("button", name="Create user").click()
    page.get_by_text("Created dana.").wait_for()
    link = page.locator("#welcome-link").inner_text().strip()
    assert re.fullmatch(rf"{re.escape(base)}/welcome/[\w-]+/[\w-]+/", link), link
    screenshot("onboarding-02-welcome-link")
    # On a phone the page keeps its width: the users table scrolls in its own box.
    page.set_viewport_size({"width": 390, "height": 844})
    widths = page.evaluate("[document.querySelector('main').scrollWidth, "
                           "document.querySelector('main').clientWidth]")
    assert widths[0] <= widths[1], widths
    screenshot("onboarding-02b-users-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_role("link", name="Teams", exact=True).click()
    page.get_by_role("link", name="ml-search").click()
    page.get_by_role("heading", name="ML Search").wait_for()
    page.get_by_label("Username").press_sequentially("scul", delay=30)
    pick = page.get_by_role("button", name=re.compile(r"^dana · Dana Scully"))
    pick.wait_for()
    screenshot("onboarding-03-pick-member")
    # The keyboard reaches the matches too: ArrowDown into the list, Escape back to the field.
    page.get_by_label("Username").press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.pickUser") == "dana"
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.id") == "id_username"
    pick.click()
    assert page.get_by_label("Username").input_value() == "dana"
    page.get_by_label("Role", exact=True).select_option("engineer")
    page.get_by_role("button", name="Add member").click()
    page.get_by_text("Added dana as engineer.").wait_for()
    screenshot("onboarding-04-member-added")
    assert Membership.objects.get(user__username="dana").role == "engineer"

    # The new user, in their own browser: the link, a password, a sign-in, their team.
    context = browser.new_context(viewport={"width": 390, "height": 844})
    newcomer = context.new_page()
    newcomer.set_default_timeout(15000)
    try:
        newcomer.goto(link)
        newcomer.get_by_role("heading", name="Welcome to Modelport").wait_for()
        newcomer.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        newcomer.get_by_label("New password confirmation").fill(NEW_PASSWORD)
        # A phone: the page fits its width.
        assert newcomer.evaluate("document.documentElement.scrollWidth") <= 390
        newcomer.screenshot(path=str(ARTIFACTS / "onboarding-05-set-password.png"),
                            full_page=True)
        newcomer.get_by_role("button", name="Set password").click()
        newcomer.get_by_text("Your password is set. Sign in as dana.").wait_for()
        _sign_in(newcomer, base, "dana", NEW_PASSWORD)
        newcomer.get_by_role("link", name="Teams", exact=True).click()
        newcomer.get_by_role("link", name="ml-search").wait_for()
        nav = newcomer.get_by_role("navigation", name="Main")
        assert nav.get_by_role("link", name="Audit log").count() == 0  # an engineer: hidden
        assert nav.get_by_role("link", name="Users").count() == 0
        newcomer.screenshot(path=str(ARTIFACTS / "onboarding-06-newcomer-teams.png"),
                            full_page=True)
        # The link worked once.
        newcomer.goto(link)
        newcomer.get_by_text("This link is invalid, was already used or has expired").wait_for()
    finally:
        context.close()
    assert {"user.created", "membership.created", "user.password_set"} <= set(
        AuditEvent.objects.values_list("action", flat=True))
