"""The annotation pages in headless Chromium (Debian's ``chromium``) driven by Playwright: two annotators sign in with
their keys, label every pair with the keyboard and the mouse, the labels land in the store with left/right mapped
back to the right responses, and the admin page shows progress, counts and Cohen's κ.

Skipped where Chromium or Playwright is missing, except under CI (``CI=true``), where ``.ci/run`` installs both and a
skip would hide a broken page.
"""

from __future__ import annotations

import os
import shutil

import pytest

from rewardloop.serve import ServeConfig, create_app
from rewardloop.store import Store
from rewardloop.store.annotation import AnnotationQueue
from rewardloop.store.keys import ApiKeys

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.environ.get("CI"):
    pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
# the flags a root, offline, headless Chromium needs here (no sandbox as root; no background calls to the network)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
ARGS += ["--disable-component-update", "--disable-sync"]
PROMPTS = {"Name a colour.": ("Blue.", "A colour."), "2+2=": ("4", "5"), "Say hi.": ("Hi!", "Goodbye.")}


@pytest.fixture(scope="module")
def site(tiny_llama, tokenizer, tmp_path_factory, live_server_class):
    db = tmp_path_factory.mktemp("annotate") / "annotate.db"
    with Store.open(url=f"sqlite:///{db}") as store:
        keys = ApiKeys(store)
        role_keys = {name: keys.create(name, role) for name, role in [("alice", "annotator"), ("bob", "annotator")]}
        role_keys["root"] = keys.create("root", "admin")
        for prompt, (v1, v2) in PROMPTS.items():  # the same prompts answered by two model versions
            store.log_interaction(model_version="v1", prompt=prompt, completion=v1)
            store.log_interaction(model_version="v2", prompt=prompt, completion=v2)
        cfg = ServeConfig.model_validate({"serve": {"model_name": "tiny", "auth": True, "annotate_overlap": 2}})
        server = live_server_class(create_app(cfg, model=tiny_llama, tokenizer=tokenizer, store=store)).start()
        yield server, store, role_keys
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def sign_in(browser, url: str, key: str):
    page = browser.new_context().new_page()
    page.goto(f"{url}/annotate")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    return page


def test_annotators_label_every_pair_and_the_admin_sees_agreement(site, browser):
    server, store, keys = site
    admin = sign_in(browser, server.url, keys["root"])
    admin.goto(f"{server.url}/annotate/admin")
    admin.get_by_role("button", name="Queue pairs from logged responses").click()
    expect(admin.get_by_role("status")).to_have_text("Queued 3 new pair(s).")

    # alice: keyboard — "1" (left better) on every pair
    alice = sign_in(browser, server.url, keys["alice"])
    preferred_by_alice = []
    for _ in PROMPTS:
        expect(alice.get_by_role("heading", name="Which response is better?")).to_be_visible()
        preferred_by_alice.append(alice.get_by_test_id("left").inner_text())
        with alice.expect_navigation():  # post, then the redirect to the next item
            alice.keyboard.press("1")
    expect(alice.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    expect(alice.get_by_text("You have labelled 3 item(s).")).to_be_visible()

    # bob: the mouse — the right one on every pair, with a comment on the first (typing "2" there types, not votes)
    bob = sign_in(browser, server.url, keys["bob"])
    for i in range(len(PROMPTS)):
        if i == 0:
            bob.get_by_label("Comment (optional)").fill("2 is wrong")
        with bob.expect_navigation():
            bob.get_by_role("button", name="Right is better").click()
    expect(bob.get_by_role("heading", name="Nothing left to label")).to_be_visible()

    # the store: 6 pairwise labels; alice's preferred texts are exactly the ones she saw on the left
    labels = [f for f in store.feedback_since(0) if f["idempotency_key"].startswith("annotate:")]
    assert sorted(f["user_id"] for f in labels) == ["alice"] * 3 + ["bob"] * 3
    chosen = []
    for f in labels:
        if f["user_id"] == "alice":
            winner = f["response_id"] if f["value"] == 1.0 else f["other_response_id"]
            chosen.append(store.get_interaction(winner)["completion"])
    assert sorted(chosen) == sorted(preferred_by_alice)
    assert [f["comment"] for f in labels if f["comment"]] == ["2 is wrong"]

    # an annotator is refused the admin page; the admin sees the progress and one κ row (alice vs bob, 3 items)
    assert alice.goto(f"{server.url}/annotate/admin").status == 403
    admin.goto(f"{server.url}/annotate/admin")
    expect(admin.get_by_test_id("progress")).to_have_text("3 items; 3 with a label; 3 with 2 labels.")
    kappa_row = admin.locator("table").nth(1).locator("tbody tr")
    expect(kappa_row).to_have_count(1)
    expect(kappa_row.locator("td").nth(2)).to_have_text("3")
    queue = AnnotationQueue(store)
    (agree,) = queue.progress()["agreement"]
    shown = "n/a" if agree["kappa"] != agree["kappa"] else f"{agree['kappa']:.3f}"
    expect(kappa_row.locator("td").nth(3)).to_have_text(shown)


def test_wrong_key_is_refused_in_the_browser(site, browser):
    server, _, _ = site
    page = sign_in(browser, server.url, "rlk-wrong")
    expect(page.get_by_role("alert")).to_have_text("That key is not valid.")
