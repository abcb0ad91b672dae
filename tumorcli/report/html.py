"""Rendering: the report and the cohort index as self-contained HTML (Jinja2 templates in
templates/, images inline as base64 PNG, no external resource), and the PDF through headless
Chromium when it is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

from tumorcli import __version__
from tumorcli.errors import TumorError
from tumorcli.io.atomic import atomic_file

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_INSTALL = "install Chromium: apt-get install chromium (Debian/Ubuntu)"


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("tumorcli.report", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


def stamp() -> str:
    return datetime.now().isoformat(sep=" ", timespec="minutes")


def render_report(context: dict) -> str:
    """The report page from the context `study.build_report` assembles."""
    facts_json = json.dumps(context["facts"], ensure_ascii=False, default=str)
    return _environment().get_template("report.html.j2").render(
        **context, facts_json=facts_json.replace("</", "<\\/"), made=stamp(),
        version=__version__)


def render_index(entries: list[dict]) -> str:
    """The cohort's index page: one row per patient (study.index_entry) linking its report."""
    return _environment().get_template("index.html.j2").render(
        patients=sorted(entries, key=lambda e: e["patient"]), made=stamp(), version=__version__)


def write_text(text: str, path: Path) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(binary: str, *arguments: str) -> list[str]:
    """Headless Chromium as root or in a container: no sandbox, no GPU, no first-run state."""
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", *arguments]


def write_pdf(html: Path, pdf: Path, timeout_s: float = 120.0) -> Path:
    """Print the report `html` to `pdf` (atomically) with headless Chromium; TumorError when
    Chromium is missing or fails."""
    binary = find_chromium()
    if binary is None:
        raise TumorError("--pdf needs Chromium, which is not installed", CHROMIUM_INSTALL)
    with atomic_file(pdf) as temporary:
        try:
            run = subprocess.run(chromium_command(binary, "--no-pdf-header-footer",
                                                  f"--print-to-pdf={temporary}",
                                                  html.resolve().as_uri()),
                                 capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TumorError(f"{pdf}: Chromium did not print the PDF in {timeout_s:.0f} s",
                             "rerun, or leave out --pdf") from None
        if run.returncode != 0 or not temporary.is_file() or temporary.stat().st_size == 0:
            detail = (run.stderr.strip().splitlines() or ["no output"])[-1][:160]
            raise TumorError(f"{pdf}: Chromium could not print the report ({detail})",
                             "check that chromium --headless runs here, or leave out --pdf")
    return pdf
