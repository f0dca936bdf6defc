"""Regenerates the README's screenshots from demo data: runs `edgebench demo` in a
scratch home (a real coordinator, a real agent, the generated model), then photographs
the leaderboard, the demo device's page and a compare of two of its results with the
real Chromium (Debian's package, through Playwright).

Usage: .venv/bin/python scripts/screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser.conftest import chromium_path  # noqa: E402

SHOTS: tuple[tuple[str, str, int, Literal["light", "dark"]], ...] = (
    # (file, path, viewport width, colour scheme)
    ("leaderboard.png", "/leaderboard", 1280, "light"),
    ("device.png", "/devices/demo-agent", 1280, "light"),
    ("compare.png", "/compare?{compare}", 1280, "dark"),
)


def start_demo(home: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "EDGEBENCH_HOME": str(home)}
    env.pop("EDGEBENCH_TOKEN", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "edgebench", "demo", "--http-port", "0", "--grpc-port", "0"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert demo.stderr is not None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = demo.stderr.readline()
        if not line and demo.poll() is not None:
            raise SystemExit(f"the demo stopped (exit {demo.returncode})")
        if line.startswith("leaderboard: "):
            return demo, line.split(": ", 1)[1].strip().removesuffix("/leaderboard")
    raise SystemExit("the demo did not reach its table in 10 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    demo, url = start_demo(Path(tempfile.mkdtemp(prefix="edgebench-shots-")))
    try:
        results = httpx.get(f"{url}/api/v1/leaderboard", params={"limit": 2}).json()["items"]
        compare = "&".join(f"r={row['result']['id']}" for row in results)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(),
                                                 args=["--no-sandbox"])  # fmt: skip
            for name, path, width, scheme in SHOTS:
                page = browser.new_page(viewport={"width": width, "height": 900},
                                        color_scheme=scheme)  # fmt: skip
                page.goto(url + path.format(compare=compare))
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(args.out / name), full_page=True)
                print(args.out / name)
            browser.close()
    finally:
        demo.terminate()
        demo.wait(timeout=30)


if __name__ == "__main__":
    main()
