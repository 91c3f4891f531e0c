"""A small helper for checking HTML reports in headless Chromium, without any Python browser driver.

``ensure_chromium()`` installs Debian's ``chromium`` package when no Chromium is found;
``screenshot_and_check_images()`` opens a report with the network blocked, counts the ``<img>``
elements that decoded (``naturalWidth > 0``) and takes a full-width screenshot.

How the image check works: the report is copied next to itself with a tiny inline script that, on
``window.onload`` (which fires only after every image has loaded or failed), writes the counts into
``<body data-images-loaded=.. data-images-total=..>``; ``chromium --dump-dom`` prints the DOM after
the load event, and the counts are read back from it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_ENV = "RAYGRID_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_TIMEOUT_S = 120

# Inserted just before </body>: counts images once the page (and so every image) has finished loading.
_PROBE = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return (i.getAttribute("alt") || i.src || "").slice(0, 80); });
  document.body.dataset.imagesLoaded = String(ok.length);
  document.body.dataset.imagesTotal = String(imgs.length);
  document.body.dataset.imagesBroken = JSON.stringify(broken);
});
</script>
"""


class ChromiumUnavailable(RuntimeError):
    """Chromium is not installed and could not be installed."""


def _find_chromium() -> str | None:
    override = os.environ.get(CHROMIUM_ENV)
    if override:
        return override if Path(override).exists() else None
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_chromium() -> str:
    """Return the path of a Chromium binary, installing Debian's ``chromium`` package if needed.

    ``$RAYGRID_CHROMIUM`` names a binary to use instead. Installing needs root (or password-less
    sudo) and ``apt-get``; anything else raises :class:`ChromiumUnavailable` with the reason.
    """
    found = _find_chromium()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise ChromiumUnavailable(
            "Chromium not found and apt-get is not available; install Chromium or set "
            f"${CHROMIUM_ENV} to its path."
        )
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise ChromiumUnavailable(
                "Chromium not found; installing it needs root (run `apt-get install -y chromium` "
                f"as root) or set ${CHROMIUM_ENV} to an existing binary."
            )
        prefix = [sudo, "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        [*prefix, apt, "-qq", "update"],
        [*prefix, apt, "-qq", "install", "-y", "--no-install-recommends", "chromium"],
    ):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ChromiumUnavailable(f"`{' '.join(cmd)}` failed: {exc}") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            raise ChromiumUnavailable(
                f"`{' '.join(cmd)}` exited with {proc.returncode}; Chromium is needed for the "
                f"report's browser test.\n{tail}"
            )
    found = _find_chromium()
    if not found:
        raise ChromiumUnavailable("apt-get installed `chromium` but no Chromium binary was found.")
    return found


def _chromium_args(chromium: str, user_data_dir: str) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        # Any attempt to reach the network fails, so a report that is not self-contained shows up
        # as broken images instead of passing by fetching them.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={user_data_dir}",
    ]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(
            f"chromium exited with {proc.returncode}: {' '.join(args[-2:])}\n{proc.stderr[-2000:]}"
        )
    return proc


def _attr(dom: str, name: str) -> str | None:
    match = re.search(rf'<body[^>]*\s{name}="([^"]*)"', dom)
    return match.group(1) if match else None


def screenshot_and_check_images(
    html_path: str | os.PathLike, png_path: str | os.PathLike, *, window_size: str = "1280,2000"
) -> dict:
    """Open ``html_path`` in headless Chromium; count loaded images and save a screenshot.

    Returns ``{"loaded": int, "total": int, "broken": [alt or src, ...], "ok": bool,
    "screenshot": Path, "chromium": str}``; ``ok`` is True when every ``<img>`` decoded.
    """
    import html as _html
    import json

    chromium = ensure_chromium()
    html_path = Path(html_path).resolve()
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    text = html_path.read_text(encoding="utf-8")
    if "</body>" in text:
        probed = text.replace("</body>", _PROBE + "</body>", 1)
    else:
        probed = text + _PROBE

    with tempfile.TemporaryDirectory(prefix="raygrid-chromium-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(probed, encoding="utf-8")
        base = _chromium_args(chromium, str(Path(tmp) / "profile"))
        dom = _run([*base, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]).stdout
        _run([*base, f"--window-size={window_size}", f"--screenshot={png_path}", html_path.as_uri()])

    loaded, total = _attr(dom, "data-images-loaded"), _attr(dom, "data-images-total")
    if loaded is None or total is None:
        raise RuntimeError(
            "the image probe did not run (no data-images-* attributes in the dumped DOM); "
            f"DOM starts with: {dom[:300]!r}"
        )
    broken = json.loads(_html.unescape(_attr(dom, "data-images-broken") or "[]"))
    if not png_path.exists() or png_path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot at {png_path}")
    return {
        "loaded": int(loaded),
        "total": int(total),
        "broken": broken,
        "ok": int(loaded) == int(total),
        "screenshot": png_path,
        "chromium": chromium,
    }
