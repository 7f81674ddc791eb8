"""The verification page (``tracemark serve`` at ``/``) in a real headless Chromium.

A real uvicorn server with a collection; an image is signed into it through the API, its
manifest stripped by re-encoding the pixels, and the stripped copy is uploaded through the
page, driven by Selenium in Debian's Chromium (scripts/_chromium.sh installs it; the test
skips only when it is not installed and ``TRACEMARK_TEST_CHROMIUM`` is unset). The page
must show ``recovered`` with the route and the manifest's title, load nothing from outside
the server, and keep the API key out of every browser storage. The screenshot is saved
under the test's tmp_path and ``test-artifacts/page-recovered.png``, the copy match (the
upload and the registered image's preview, each with the matched region outlined) as
``test-artifacts/page-match.png`` (gitignored).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tracemark.imageio import encode_image, load_image  # noqa: E402
from tracemark.service.app import ServiceSettings, create_app  # noqa: E402
from tracemark.service.page import ASSETS, CSP  # noqa: E402

from ._serving import uvicorn_in_thread  # noqa: E402
from .conftest import CORPUS, corpus_crop  # noqa: E402

CHROMIUM = os.environ.get("TRACEMARK_TEST_CHROMIUM") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def test_page_and_assets_are_served_locally_with_a_strict_csp(tmp_path: Path) -> None:
    app = create_app(ServiceSettings(data_dir=tmp_path))
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP
        assert "default-src 'self'" in CSP and "unsafe-inline" not in CSP
        html = page.text
        assert "http://" not in html and "https://" not in html  # no CDN, no external asset
        assert " on" + "click=" not in html.lower() and "<script>" not in html  # no inline code
        for name in set(ASSETS) - {"index.html"}:
            res = client.get(f"/static/{name}")
            assert res.status_code == 200 and res.headers["content-security-policy"] == CSP
            assert res.headers["content-type"] == ASSETS[name]
            assert f"/static/{name}" in html
            assert "localStorage" not in res.text.replace("never in localStorage", "")
            assert "http://" not in res.text.replace('"http://www.w3.org/2000/svg"', "")
        for bad in ("index.html", "nope.js", "..%2Fpage.py", "%2e%2e"):
            res = client.get(f"/static/{bad}")
            assert res.status_code == 404 and set(res.json()) == {"error"}
        paths = client.get("/openapi.json").json()["paths"]
        assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def _browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        if os.environ.get("TRACEMARK_TEST_CHROMIUM"):
            pytest.fail(f"TRACEMARK_TEST_CHROMIUM is set but {CHROMIUM} or {CHROMEDRIVER} is missing")
        pytest.skip("Debian's chromium and chromium-driver are not installed "
                    "(scripts/_chromium.sh installs them; scripts/test.sh runs it)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1100,1800", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))


def test_a_stripped_copy_is_shown_recovered_in_chromium(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    import base64

    import cv2
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tracemark.credentials import init_dev_ca

    init_dev_ca(tmp_path / "certs")
    c = tmp_path / "certs"
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", cert=c / "signer.pem",
                                     key=c / "signer.key", trust=c / "ca.pem"))
    token = app.state.tm.keys.create(scope="write", collections=["*"], name="page")[0]
    title = "Harbour at dusk, page test"
    driver = _browser(tmp_path)
    with uvicorn_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        h = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=h, timeout=60) as api:
            for name in ("archive", "works"):
                assert api.post("/v1/collections", json={"name": name}).status_code == 201
            src = corpus_crop("photo/gcompris_51.jpg", 320)
            signed = api.post("/v1/collections/works/sign",
                              files={"image": ("a.png", encode_image(src, "PNG"))},
                              data={"format": "jpg", "title": title})
            assert signed.status_code == 200, signed.text
            # stripped: the pixels re-encoded, no manifest left in the file
            stripped = encode_image(load_image(signed.content), "JPEG", quality=85)
            assert b"c2pa" not in stripped
            upload = tmp_path / "stripped copy.jpg"
            upload.write_bytes(stripped)
        try:
            driver.get(base + "/")
            wait = WebDriverWait(driver, 45)
            # every control has a label the browser resolves
            for ctl in driver.find_elements(By.CSS_SELECTOR, "input, select"):
                assert driver.find_elements(By.CSS_SELECTOR, f"label[for='{ctl.get_attribute('id')}']")
            assert driver.find_element(By.ID, "result").get_attribute("aria-live") == "polite"
            key = driver.find_element(By.ID, "api-key")
            key.send_keys(token)
            driver.find_element(By.ID, "key-use").click()
            wait.until(ec.element_to_be_clickable((By.ID, "verify")))
            rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#collections tbody tr")
                              if len(d.find_elements(By.CSS_SELECTOR, "#collections tbody tr")) == 2
                              else False)
            counts = {r.find_element(By.TAG_NAME, "th").text: r.find_elements(By.TAG_NAME, "td")[0].text
                      for r in rows}
            assert counts == {"archive": "0", "works": "1"}
            Select(driver.find_element(By.ID, "collection")).select_by_value("works")
            driver.find_element(By.ID, "file").send_keys(str(upload))
            driver.find_element(By.ID, "verify").click()
            state = wait.until(ec.presence_of_element_located((By.ID, "state")))
            wait.until(ec.presence_of_element_located((By.ID, "matches")))
            assert state.text.lower() == "recovered"
            route = driver.find_element(By.ID, "route").text
            assert "watermark" in route or "fingerprint" in route, route
            assert driver.find_element(By.ID, "recovered-title").text == title
            result = driver.find_element(By.ID, "result").text
            assert "stripped" in result and "tracemark" in result  # the signer's claim generator
            assert "Watermark: present" in driver.find_element(By.ID, "watermark").text
            canvases = driver.find_elements(By.CSS_SELECTOR, "#matches canvas")
            assert len(canvases) == 2, "the match outlined on the upload and on the reference"
            for canvas in canvases:  # the outline (#ff2d55) is drawn along the matched region
                px = driver.execute_script(
                    "const c = arguments[0], d = c.getContext('2d').getImageData(1, c.height >> 1, 1, 1).data;"
                    "return Array.from(d);", canvas)
                assert px[0] > px[1] + 60 and px[0] > px[2] + 60, px
            assert driver.find_element(By.ID, "error").text == ""
            # the reference side shows the registered image's preview, not an empty frame:
            # its pixels (read back from the canvas) look like the signed image scaled
            ref_canvas = driver.find_element(By.CSS_SELECTOR, "#matches canvas.reference-figure")
            assert ref_canvas.get_attribute("data-preview") == "pixels"
            png_b64 = driver.execute_script(
                "return arguments[0].toDataURL('image/png').split(',')[1];", ref_canvas)
            drawn = load_image(base64.b64decode(png_b64))
            assert max(drawn.shape[:2]) == 256  # the preview's size (320 px reference)
            expect = cv2.resize(load_image(signed.content), drawn.shape[1::-1],
                                interpolation=cv2.INTER_AREA)
            inner = (slice(8, -8), slice(8, -8))  # inside the outline
            diff = drawn[inner].astype(float) - expect[inner].astype(float)
            assert 10 * np.log10(255**2 / np.mean(diff**2)) > 22
            # the signature has no timestamp (no TSA): the page says so rather than a time
            assert "not stated" in result and "Signed at" in result

            shot = tmp_path / "page-recovered.png"
            driver.save_screenshot(str(shot))
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(shot, ARTIFACTS / "page-recovered.png")
            driver.execute_script("arguments[0].scrollIntoView();",
                                  driver.find_element(By.ID, "matches"))
            driver.save_screenshot(str(tmp_path / "page-match.png"))
            shutil.copyfile(tmp_path / "page-match.png", ARTIFACTS / "page-match.png")
            print(f"screenshots: {shot}, {ARTIFACTS / 'page-recovered.png'}, "
                  f"{ARTIFACTS / 'page-match.png'}")

            # the key in no storage the browser keeps, and not left in the field
            stored = driver.execute_script(
                "const all = [];"
                "for (const s of [localStorage, sessionStorage])"
                "  for (let i = 0; i < s.length; i++) all.push(s.key(i), s.getItem(s.key(i)));"
                "return JSON.stringify([all, document.cookie]);")
            assert token not in stored and json.loads(stored) == [[], ""]
            assert driver.get_cookies() == []
            assert key.get_attribute("value") == ""
            # nothing requested outside the server
            urls = []
            for entry in driver.get_log("performance"):
                msg = json.loads(entry["message"])["message"]
                if msg["method"] == "Network.requestWillBeSent":
                    urls.append(msg["params"]["request"]["url"])
            assert any(u.endswith("/verify") for u in urls) and any(u.endswith("/page.js") for u in urls)
            # chrome:// are the browser's own built-in resources, never fetched over a network
            outside = [u for u in urls if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")
                       and not u.startswith(base + "/")]
            assert outside == []
            severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert severe == [], severe  # no CSP violation, no script error
        finally:
            driver.quit()


def test_page_has_no_inline_handlers_for_the_csp() -> None:
    from importlib.resources import files

    html = files("tracemark.service").joinpath("static", "index.html").read_text()
    attrs = np.array([f" on{e}=" in html.lower() for e in ("click", "change", "submit", "load", "input")])
    assert not attrs.any()
    assert "style=" not in html  # inline styles are refused by style-src 'self'


def test_the_page_works_from_the_keyboard_alone(tmp_path: Path) -> None:
    """Tab reaches every control in reading order once a key is in; the key is entered with
    Enter; the drop zone opens the chooser with Enter; Verify is pressed with the keyboard
    (the file itself is handed to the input by Selenium: a native dialog cannot be driven)."""
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    app = create_app(ServiceSettings(data_dir=tmp_path / "data"))
    token = app.state.tm.keys.create(scope="write", collections=["*"], name="kbd")[0]
    upload = tmp_path / "photo.png"
    upload.write_bytes(encode_image(corpus_crop("photo/gcompris_51.jpg", 256), "PNG"))
    driver = _browser(tmp_path)
    with uvicorn_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        import httpx

        assert httpx.post(base + "/v1/collections", json={"name": "works"}, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}).status_code == 201
        try:
            driver.get(base + "/")
            wait = WebDriverWait(driver, 45)

            def active() -> str:
                return driver.switch_to.active_element.get_attribute("id") or "?"

            def tab(times: int = 1, back: bool = False) -> None:
                keys = Keys.SHIFT + Keys.TAB if back else Keys.TAB
                for _ in range(times):
                    ActionChains(driver).send_keys(keys).perform()

            tab()
            assert active() == "api-key"
            ActionChains(driver).send_keys(token + Keys.ENTER).perform()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#collections tbody tr"))
            driver.find_element(By.ID, "file").send_keys(str(upload))
            wait.until(ec.element_to_be_clickable((By.ID, "verify")))
            order = []
            for _ in range(20):  # round the page (the browser's own UI counts as "?")
                tab()
                order.append(active())
            controls = ["api-key", "key-use", "collection", "file", "drop", "verify", "refresh"]
            seen = [c for c in order if c in controls]
            start = seen.index("api-key")
            assert seen[start:start + len(controls)] == controls, order
            # the drop zone answers Enter (the chooser opens natively: only no error is seen)
            driver.find_element(By.ID, "drop").send_keys(Keys.ENTER)
            driver.find_element(By.ID, "verify").send_keys(Keys.ENTER)
            state = wait.until(ec.presence_of_element_located((By.ID, "state")))
            assert state.text  # a verdict shown (this image was never signed)
            assert driver.find_element(By.ID, "error").text == ""
        finally:
            driver.quit()
