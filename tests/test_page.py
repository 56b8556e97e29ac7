"""The seller page (GET /) and the offline API docs in a real browser: headless Chromium (Debian's package)
through Playwright, against the real service on a loopback port, serving conftest's tiny trained model.

Each test records every request the page makes and asserts they all went to the service itself, and keeps a
screenshot under its temporary folder. Without Playwright or Chromium these tests skip (CI installs both).
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
from page_driver import (  # noqa: E402
    MEASURE,
    RequestLog,
    choose,
    launch,
    missing_browser,
    save_small_png,
    serve,
    upload,
)

if missing_browser():
    if os.environ.get("CI") == "true":  # .ci/run installs Chromium: in CI a missing browser is a failure
        raise RuntimeError(f"browser tests cannot run in CI: {missing_browser()}")
    pytest.skip(missing_browser(), allow_module_level=True)

import httpx  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from embed.images import accept_attribute  # noqa: E402

expect.set_options(timeout=20_000)  # a loaded CI machine can take seconds for a first answer
ROOT = Path(__file__).resolve().parents[1]
# The stand-in photos; the variable lets a git worktree (whose parent has no shared/) point at them.
CLOTHING = Path(os.environ.get("VINTED_TAGGER_CLOTHING") or ROOT.parent / "shared" / "data" / "clothing")
SCREENSHOT_ENV = "VINTED_TAGGER_PAGE_SCREENSHOT"  # where test_readme_screenshot also saves its PNG


@pytest.fixture(scope="module")
def base_url(service_model: Path):
    with serve(service_model) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, base_url):
    """A fresh page on /, with every request it makes recorded; asserts at the end none left the service."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    requests = RequestLog(page)
    page.goto(base_url + "/")
    yield page
    context.close()
    assert requests.urls and not requests.blocked and not requests.left_service(base_url)


def predict_via_api(base_url: str, name: str, data: bytes) -> dict:
    response = httpx.post(f"{base_url}/v1/predict", files=[("files", (name, data, "image/jpeg"))], timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_card_shows_the_api_answer(page, base_url, picture, image_bytes, tmp_path) -> None:
    data = image_bytes(picture(3, (320, 240)))
    (card,) = choose(page, [upload("shirt.jpg", data)])
    want = predict_via_api(base_url, "shirt.jpg", data)
    result = want["results"][0]
    expect(card).to_have_attribute("data-state", "ok")
    shown = card.locator(".top-row .category")
    assert shown.all_inner_texts() == [result["category1"], result["category2"]]
    percents = card.locator(".top-row .percent").all_inner_texts()
    assert percents == [f"{c['probability'] * 100:.1f}%" for c in result["categories"][:2]]
    assert card.locator(".more-row .category").all_inner_texts() == [c["category"] for c in result["categories"][2:]]
    for tag, decision in result["tags"].items():
        chip = card.locator(f'.chip[data-tag="{tag}"]')
        expect(chip).to_have_attribute("data-present", str(decision["present"]))
        expect(chip.locator(".chip-score")).to_have_text(f"{decision['score']:.2f} / {decision['threshold']:.2f}")
    expect(card.locator(".meta")).to_contain_text(want["model_id"])
    expect(card.locator(".meta")).to_have_text(re.compile(r"answered in \d+ ms"))
    expect(page.locator("#status")).to_have_text("1 photo analysed.")
    # The measure the page bench reads: one per card, from the choice to that card shown.
    durations = page.evaluate(f"performance.getEntriesByName('{MEASURE}').map(m => m.duration)")
    assert len(durations) == 1 and durations[0] > 0
    page.screenshot(path=tmp_path / "page.png", full_page=True)


def test_bad_files_fail_on_their_own_cards(page, picture, image_bytes, broken_image, tmp_path) -> None:
    truncated, truncated_reason = broken_image("truncated-jpeg")
    text, text_reason = broken_image("text")
    files = [
        upload("good.jpg", image_bytes(picture(1))),
        upload("truncated.jpg", truncated),
        upload("notes.txt", text, "text/plain"),
    ]
    good, bad, not_image = choose(page, files)
    expect(good).to_have_attribute("data-state", "ok")
    expect(good.locator(".problem")).to_be_hidden()
    for card, name, reason in [(bad, "truncated.jpg", truncated_reason), (not_image, "notes.txt", text_reason)]:
        expect(card).to_have_attribute("data-state", "error")
        expect(card.locator(".file")).to_have_text(name)
        expect(card.locator(".problem-reason")).to_contain_text(re.compile(reason, re.IGNORECASE))
        expect(card.locator(".answer")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("1 photo analysed, 2 could not be analysed.")
    page.screenshot(path=tmp_path / "page-errors.png", full_page=True)


def test_keyboard_and_screen_reader_labels(page, picture, image_bytes) -> None:
    """Tab reaches the file input (its drop zone shows the focus), Enter opens the picker; results are
    announced in a live region and each card is named by its file."""
    choosers = []
    # Listening from the start turns Playwright's chooser interception on before the key press.
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "files":
            break
    assert page.evaluate("document.activeElement.id") == "files"
    outline = page.locator("#drop").evaluate("e => getComputedStyle(e).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Enter")
    for _ in range(100):  # the file chooser event arrives asynchronously; bounded wait
        if choosers:
            break
        page.wait_for_timeout(50)
    (chooser,) = choosers
    chooser.set_files([upload("keyboard.jpg", image_bytes(picture(2)))])
    card = page.locator(".card").first
    expect(card).to_have_attribute("data-state", "ok")
    expect(page.locator("#status")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#status")).to_have_text("1 photo analysed.")
    expect(card).to_have_accessible_name("keyboard.jpg")
    expect(page.get_by_label("Drop photos here or choose photos")).to_have_attribute("accept", accept_attribute())


def test_phone_width(browser, base_url, picture, image_bytes, tmp_path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(base_url + "/")
    (card,) = choose(page, [upload("phone.jpg", image_bytes(picture(4, (240, 320))))])
    expect(card).to_have_attribute("data-state", "ok")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than the screen
    photo, answer = card.locator(".thumb").bounding_box(), card.locator(".answer").bounding_box()
    assert answer["y"] >= photo["y"] + photo["height"]  # stacked: the answer below the photo
    page.screenshot(path=tmp_path / "page-phone.png", full_page=True)
    context.close()


# ReDoc's bundle always shows Redocly's logo from their CDN; the service's content policy stops that one.
DOCS = [("/docs", ".opblock-summary", []), ("/redoc", "[role=search]", ["https://cdn.redoc.ly/redoc/logo-mini.svg"])]


@pytest.mark.parametrize(("path", "ready", "blocked"), DOCS)
def test_api_docs_load_offline(browser, base_url, path, ready, blocked, tmp_path) -> None:
    page = browser.new_page()
    requests = RequestLog(page)
    response = page.goto(base_url + path)
    assert "default-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator(ready).first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("/v1/predict").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=tmp_path / f"{path.strip('/')}.png", full_page=False)
    page.close()
    assert any(url.endswith(".js") for url in requests.urls)
    assert not requests.left_service(base_url), requests.urls
    assert requests.blocked == blocked


@pytest.mark.skipif(not (CLOTHING / "images.zip").exists(), reason="needs ../shared/data/clothing (stand-in photos)")
def test_readme_screenshot(browser, tmp_path) -> None:
    """The README's picture of the page: the committed model on two stand-in test photos and a broken file.
    Saved under tmp_path, and also at $VINTED_TAGGER_PAGE_SCREENSHOT when set (`make page-screenshot`)."""
    import pandas as pd

    labels = pd.read_parquet(CLOTHING / "test_labels.parquet").sort_values("uuid")
    garment = labels[labels["cc3"] == "Shirt"]["uuid"].iloc[0]
    floral = labels[labels["floral"] == 1]["uuid"].iloc[0]
    with zipfile.ZipFile(CLOTHING / "images.zip") as archive:
        photos = [archive.read(f"images/{uuid}.jpg") for uuid in (garment, floral)]
    files = [upload("shirt.jpg", photos[0]), upload("dress.jpg", photos[1]), upload("cut-off.jpg", photos[0][:2500])]
    with serve(ROOT / "artifacts" / "model") as url:
        page = browser.new_page(viewport={"width": 900, "height": 800})
        page.goto(url + "/")
        cards = choose(page, files)
        assert [c.get_attribute("data-state") for c in cards] == ["ok", "ok", "error"]
        saved = save_small_png(page, tmp_path / "readme.png")
        page.close()
    assert saved.stat().st_size < 200_000
    if os.environ.get(SCREENSHOT_ENV):
        Path(os.environ[SCREENSHOT_ENV]).write_bytes(saved.read_bytes())


def test_a_heic_chosen_on_the_page_gets_its_card(page, picture) -> None:
    """An iPhone's default format: the file input offers it (accept from embed.images.PHOTO_FORMATS) and the
    service answers it; the browser cannot preview HEIC, so the card shows without a thumbnail."""
    from photo_kinds import rotated_as

    assert page.locator("#files").get_attribute("accept") == accept_attribute()
    (card,) = choose(page, [upload("IMG_0001.HEIC", rotated_as(picture(2, (320, 240)), "HEIF"), "image/heic")])
    expect(card).to_have_attribute("data-state", "ok")
    expect(card.locator(".file")).to_have_text("IMG_0001.HEIC")
    expect(card.locator(".top-row .category")).to_have_count(2)
    expect(page.locator("#status")).to_have_text("1 photo analysed.")
