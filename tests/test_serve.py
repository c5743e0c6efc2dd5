"""`sgilo serve` (issue 18) in a real headless browser: upload a photo, press Restore, a restored image appears.

Skipped unless Gradio, selenium, /usr/bin/chromium and /usr/bin/chromedriver are installed (Debian:
``apt-get install chromium chromium-driver``; ``pip install -e '.[app,test]'``). The server runs in this process on
127.0.0.1 (a free port) with a tiny generator and 2 SGILO steps, so a request takes seconds.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ASTRONAUT = Path(__file__).resolve().parents[1] / "sgilo" / "assets" / "astronaut64.png"

pytest.importorskip("gradio")
pytest.importorskip("selenium")
pytestmark = [pytest.mark.skipif(not (CHROMIUM.exists() and DRIVER.exists()),
                                 reason="needs /usr/bin/chromium and /usr/bin/chromedriver"),
              pytest.mark.slow]     # ≈ 20–40 s: Gradio start-up and a browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    from conftest import make_tiny_generator

    from sgilo.app.serve import launch
    from sgilo.generator import fit_gaussianized_w, save_generator
    G = make_tiny_generator(64)
    save_generator(tmp_path / "tiny64", G, fit_gaussianized_w(G.mapping, 2000,
                                                              generator=torch.Generator().manual_seed(0)))
    port = free_port()
    app = launch(port=port, block=False, model=str(tmp_path / "tiny64"), prior="none", steps=(2,), samples=2)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1400,1800"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_serve_upload_restore_shows_the_restored_image(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    photo = np.zeros((120, 160, 3), np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 100, 120, 150
    photo[28:92, 48:112] = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    Image.fromarray(photo).save(tmp_path / "photo.png")

    browser.get(server)
    wait = WebDriverWait(browser, 60)
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#photo input[type=file]")))
    upload.send_keys(str(tmp_path / "photo.png"))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#photo img")))
    t0 = time.time()
    wait.until(EC.element_to_be_clickable((By.ID, "run"))).click()
    img = WebDriverWait(browser, 120).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#restored img")))
    assert img.get_attribute("src")
    info = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#info textarea").get_attribute("value"))
    assert "1 face(s)" in info, info
    assert browser.find_elements(By.CSS_SELECTOR, "#std img") and browser.find_elements(By.CSS_SELECTOR, "#samples img")
    assert time.time() - t0 < 120
