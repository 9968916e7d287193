"""A headless Chromium for the HTML report tests, and a local server that logs every request; not collected.

* :func:`find_chromium` / :func:`browser_or_skip`: the browser, or a skip (a failure when the environment sets
  ``LORA_AUDIT_BROWSER_TESTS=required``, as CI does, so browser tests can never pass by skipping there).
* :func:`dump_dom`: the DOM after the page's scripts ran (``--dump-dom``), as serialised HTML.
* :func:`screenshot`: a PNG of the page.
* :class:`RequestLog`: a threaded HTTP server on 127.0.0.1 (any free port) that records every request.

Chromium runs with a fresh profile and with its own background traffic (component updates, sync, safe
browsing, metrics, DNS prefetch...) switched off, so any request the :class:`RequestLog` sees was made by the
page. Nothing here downloads anything.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

ENV_REQUIRED = "LORA_AUDIT_BROWSER_TESTS"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Chromium's own network activity off: only the page may make requests.
_QUIET = (
    "--headless",
    "--no-sandbox",  # CI containers run as root, where the sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-pings",
    "--mute-audio",
    ("--disable-features=Translate,OptimizationHints,MediaRouter,InterestFeedContentSuggestions,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,DialMediaRouteProvider"),
)
TIMEOUT_S = 60.0


def find_chromium() -> str | None:
    """The path of a Chromium/Chrome executable on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_required() -> bool:
    return os.environ.get(ENV_REQUIRED, "").strip().lower() == "required"


def browser_or_skip() -> str:
    """The browser path; without one, skip the test, or fail it when ``LORA_AUDIT_BROWSER_TESTS=required``."""
    path = find_chromium()
    if path is None:
        message = (f"no headless browser found (looked for {', '.join(CANDIDATES)} on PATH); "
                   "install one, e.g. `apt-get install chromium`")
        if browser_required():
            pytest.fail(f"{message}; {ENV_REQUIRED}=required, so browser tests may not be skipped")
        pytest.skip(message)
    return path


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run Chromium in its own process group with a fresh profile; kill the whole group on a timeout."""
    exe = browser_or_skip()
    with tempfile.TemporaryDirectory(prefix="lora-audit-chromium-") as profile:
        env = dict(os.environ, HOME=profile, XDG_CONFIG_HOME=profile, XDG_CACHE_HOME=profile)
        cmd = [exe, *_QUIET, f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"chromium did not finish within {timeout:.0f} s: {' '.join(cmd)}\n"
                                 f"{err.decode(errors='replace')[-2000:]}") from None
        finally:
            try:  # helper processes left behind by the browser
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _url(path: str | os.PathLike) -> str:
    return Path(path).resolve().as_uri()


def dump_dom(html_path: str | os.PathLike, *, budget_ms: int = 3000, timeout: float = TIMEOUT_S) -> str:
    """The DOM of ``html_path`` serialised after ``budget_ms`` of virtual time (scripts ran, timers fired)."""
    r = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", _url(html_path)], timeout)
    out = r.stdout.decode("utf-8", errors="replace")
    if r.returncode != 0 or not out.strip():
        raise AssertionError(f"chromium --dump-dom failed (exit {r.returncode}):\n"
                             f"{r.stderr.decode(errors='replace')[-2000:]}")
    return out


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, *, width: int = 1280,
               height: int = 1600, budget_ms: int = 2000, timeout: float = TIMEOUT_S) -> Path:
    """A ``width`` x ``height`` PNG of ``html_path`` at ``png_path``."""
    png = Path(png_path).resolve()
    if png.exists():
        png.unlink()
    r = _run([f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars",
              f"--virtual-time-budget={budget_ms}", _url(html_path)], timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise AssertionError(f"chromium --screenshot wrote no image (exit {r.returncode}):\n"
                             f"{r.stderr.decode(errors='replace')[-2000:]}")
    return png


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "RequestLog/1"
    protocol_version = "HTTP/1.0"

    def _record(self) -> None:
        self.server.log_request_line(self.command, self.path)  # type: ignore[attr-defined]
        body = b"/* logged */\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # every method: GET, POST, HEAD, OPTIONS, PUT, PROPFIND...
            return self._record
        raise AttributeError(name)

    def log_message(self, format, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def log_request_line(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))


class RequestLog:
    """``with RequestLog() as log:`` a server at ``log.url`` that answers 200 to anything and lists every
    request it received as ``(method, path)`` in ``log.requests``."""

    def __init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def requests(self) -> list[tuple[str, str]]:
        if self._server is None:
            return []
        with self._server._lock:
            return list(self._server.requests)

    def __enter__(self) -> RequestLog:
        self._server = _Server()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="RequestLog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
