"""`tumor report --llm-url`: a real HTTP endpoint on 127.0.0.1, started and stopped by each
test, that answers like an OpenAI-compatible chat completion; its wrong numbers and sides are
marked, a failing endpoint falls back to the template, and without a URL nothing connects."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from test_report import embedded_facts, write_patient
from tumorcli.cli.app import app

runner = CliRunner()


class Endpoint:
    """A chat-completions server on 127.0.0.1 for one test: answers `content` (or a raw body /
    status), after `delay_s`; records every request; stops itself after `life_s` at most."""

    def __init__(self, content: str = "", status: int = 200, raw: bytes | None = None,
                 delay_s: float = 0.0, life_s: float = 30.0) -> None:
        self.requests: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": json.loads(self.rfile.read(length))})
                time.sleep(min(delay_s, life_s))
                body = raw if raw is not None else json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": content}}]}
                ).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._stop = threading.Timer(life_s, self.server.shutdown)
        self._stop.daemon = True

    def __enter__(self) -> "Endpoint":
        self._thread.start()
        self._stop.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.cancel()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture()
def patient(tmp_path):
    """A one-patient cohort, tumour in the right hemisphere, and its template facts."""
    cohort = write_patient(tmp_path / "cohort")
    out = tmp_path / "template.html"
    assert runner.invoke(app, ["report", "-i", str(cohort), "--seg", str(cohort), "-o",
                               str(out)]).exit_code == 0
    return cohort, embedded_facts(out.read_text())["sessions"][-1]


def report(cohort, out, *args):
    return runner.invoke(app, ["report", "-i", str(cohort), "--seg", str(cohort), "-o",
                               str(out), *args])


def test_a_wrong_volume_and_a_wrong_side_from_the_model_are_both_flagged(patient, tmp_path,
                                                                        monkeypatch):
    cohort, last = patient
    volumes = last["volumes_cm3"]
    assert last["location"]["hemisphere"] == "right"
    wrong_wt = 1.5 * volumes["WT"]
    text = (f"Enhancing tumour in the left hemisphere: enhancing tumour {volumes['ET']:.2f} cm³, "
            f"whole tumour {wrong_wt:.2f} cm³, oedema {volumes['SNFH']:.1f} mL.")
    monkeypatch.setenv("TUMOR_LLM_API_KEY", "test-key")
    out = tmp_path / "llm.html"
    with Endpoint(text) as endpoint:
        made = report(cohort, out, "--llm-url", endpoint.url, "--llm-model", "radiology-7b",
                      "--json")
    assert made.exit_code == 0, made.output
    mismatches = json.loads(made.stdout)["reports"][0]["mismatches"]
    assert len(mismatches) == 2, mismatches
    assert any(f"{wrong_wt:.2f} cm³" in m for m in mismatches)
    assert any(m.startswith("'left'") for m in mismatches)
    html = out.read_text()
    marked = re.findall(r'<mark title="([^"]+)">([^<]+)</mark>', html)
    assert [word for _, word in marked] == ["left", f"{wrong_wt:.2f} cm³"]
    assert "needs verification by a clinician" in html
    assert f"{volumes['ET']:.2f} cm³" in html  # the right numbers stand unmarked
    request = endpoint.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer test-key"
    assert request["body"]["model"] == "radiology-7b"
    assert isinstance(request["body"]["messages"][1]["content"], str)  # no images unasked


def test_images_go_to_the_model_only_with_llm_images(patient, tmp_path):
    cohort, _ = patient
    with Endpoint("Stable appearances.") as endpoint:
        made = report(cohort, tmp_path / "r.html", "--llm-url", endpoint.url + "/chat/completions",
                      "--llm-model", "m", "--llm-images")
    assert made.exit_code == 0, made.output
    request = endpoint.requests[0]
    assert request["path"] == "/v1/chat/completions"  # a URL ending so is used as given
    parts = request["body"]["messages"][1]["content"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 2 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("failure", ["timeout", "http 500", "not json"])
def test_a_failing_endpoint_gives_the_template_narrative_and_a_warning(patient, tmp_path,
                                                                       failure):
    cohort, _ = patient
    server = {"timeout": dict(content="late", delay_s=3.0, life_s=10.0),
              "http 500": dict(status=500, raw=b'{"error": "overloaded"}'),
              "not json": dict(raw=b"<html>gateway</html>")}[failure]
    out = tmp_path / "r.html"
    began = time.perf_counter()
    with Endpoint(**server) as endpoint:
        made = report(cohort, out, "--llm-url", endpoint.url, "--llm-model", "m",
                      "--llm-timeout", "0.5")
    assert made.exit_code == 0, made.output
    assert "warning" in made.output and "template narrative" in made.output
    html = out.read_text()
    assert 'class="warning"' in html and "gave no impression" in html
    assert "<mark" not in html and "AI-written" not in html
    assert "Compared with day 0, session 000" in html  # the template impression
    if failure == "timeout":
        assert time.perf_counter() - began < 10


def test_without_an_endpoint_nothing_connects(patient, tmp_path, monkeypatch):
    cohort, _ = patient

    def refuse(*args, **kwargs):
        raise AssertionError("tumor report opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    made = report(cohort, tmp_path / "r.html")
    assert made.exit_code == 0, made.output
