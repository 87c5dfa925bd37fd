"""Issue 19, item 4, against a real HMI server (`station.hmi.app.run` in a subprocess, the
same as `station run`): security headers on every page and route, pages that a real Chromium
refuses to frame, upload bodies refused before they are read, HTTPS with a self-signed
certificate made here (openssl) and the session cookie's flags, a trusted proxy's HTTPS."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from station.config import HmiConfig
from station.config_errors import ConfigError
from station.hmi.security import MAX_UPLOAD_BYTES, check_tls_files
from tests.hmi.conftest import PASSWORDS
from tests.hmi.stand import REPO
from tests.hmi.browser import CHROMEDRIVER, CHROMIUM, child_env, free_port, open_page, wait_for

pytestmark = pytest.mark.browser

HEADERS = {
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}
PAGES = ["/", "/history", "/charts", "/recipes", "/users", "/settings", "/inspection/1", "/login"]


def serve(root: Path, port: int, *tls: Path) -> subprocess.Popen:
    log = open(root / "hmi.log", "w")
    return subprocess.Popen([sys.executable, "-m", "tests.hmi.serve_hmi", str(root), str(port), *map(str, tls)],
                            cwd=REPO, env=child_env(), stdout=log, stderr=subprocess.STDOUT)


def wait_up(url: str, proc: subprocess.Popen, context: ssl.SSLContext | None = None, timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"HMI server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def hmi_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hmi-server")
    port = free_port()
    proc = serve(root, port)
    try:
        wait_up(f"http://127.0.0.1:{port}/login", proc)
        yield f"http://127.0.0.1:{port}", port
    finally:
        stop(proc)


def get(url: str, cookie: str | None = None, context=None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """GET without following redirects: (status, lower-cased headers, body)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    handlers = [NoRedirect()] + ([urllib.request.HTTPSHandler(context=context)] if context else [])
    req = urllib.request.Request(url, headers={**({"Cookie": cookie} if cookie else {}), **(headers or {})})
    try:
        with urllib.request.build_opener(*handlers).open(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def assert_secured(url: str, status: int, headers: dict) -> None:
    for name, value in HEADERS.items():
        assert headers.get(name) == value, f"{url} ({status}): {name} is {headers.get(name)!r}"


def sign_in(driver, base: str, name: str, path: str = "/history") -> str:
    """Sign in through the login page in the browser; returns the Cookie header it now sends."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(driver, f"{base}/login?next={path}")
    inputs = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "input"), what="login inputs")
    inputs[0].send_keys(name)
    inputs[1].send_keys(PASSWORDS[name], Keys.ENTER)
    wait_for(lambda: driver.find_elements(By.XPATH, "//*[contains(text(),'Sign out')]"), what="a signed-in page")
    return "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())


def test_every_page_and_route_sends_the_security_headers(hmi_server, browser):
    base, _ = hmi_server
    anonymous = [(p, None) for p in PAGES]
    status, _, page = get(base + "/login")
    static = sorted({part.split('"')[0] for part in page.decode().split('src="')[1:] if part.startswith("/_nicegui/")})
    assert static, "the login page links NiceGUI's scripts"
    cookie = sign_in(browser, base, "ada")
    signed_in = [(p, cookie) for p in PAGES] + [(s, None) for s in static[:3]] + [
        ("/hmi/archive/999999", cookie), ("/no-such-page", None), ("/hmi/session/alive", cookie),
    ]
    seen = {}
    for path, ck in anonymous + signed_in:
        status, headers, _ = get(base + path, ck)
        assert_secured(path, status, headers)
        seen.setdefault(status, []).append(path)
    assert {200, 307, 404} <= set(seen), seen  # signed-in pages, redirects to login, errors: all covered
    assert "/history" in seen[200] and "/users" in seen[200]


def test_a_real_browser_refuses_to_frame_the_hmi(hmi_server, browser):
    """Same origin even: frame-ancestors 'none' / DENY. Without the headers the framed login
    page would be readable here (same origin) and show its inputs."""
    base, _ = hmi_server
    open_page(browser, base + "/login")
    browser.execute_script("""
        const f = document.createElement('iframe'); f.id = 'framed'; f.src = '/login';
        document.body.appendChild(f);""")
    framed = wait_for(lambda: browser.execute_script("""
        const f = document.getElementById('framed');
        let doc = null;
        try { doc = f.contentDocument; } catch (e) { return 'blocked (cross-origin error page)'; }
        if (doc === null) return 'blocked (error page, no document)';
        const href = doc.location.href;
        if (href.startsWith('chrome-error:')) return 'blocked (error page)';
        if (href.endsWith('/login') && doc.readyState === 'complete') return 'framed: ' + doc.title;
        return null;  // still about:blank or loading"""),
        what="the iframe to load or be blocked")
    assert framed.startswith("blocked"), framed


def raw_post(port: int, path: str, head: dict, body_parts: list[bytes], chunked: bool = False) -> tuple[int, float]:
    """POST over a raw socket; returns (status, bytes of body sent before the answer came)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in head.items()]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent = 0
        s.settimeout(0.05)
        for part in body_parts:
            try:
                answer = s.recv(4096)
                if answer:
                    return int(answer.split()[1]), sent
            except TimeoutError:
                pass
            try:
                s.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(part)
        s.settimeout(10)
        answer = s.recv(4096)
        return int(answer.split()[1]), sent


def test_upload_over_the_limit_is_refused_before_its_body_is_read(hmi_server):
    _, port = hmi_server
    path = "/_nicegui/client/some-client/upload/some-element"
    # declared too large: refused on the headers alone, not one byte of body sent
    status, sent = raw_post(port, path, {"Content-Length": str(50 * 1024 * 1024), "Content-Type": "multipart/form-data; boundary=x"}, [])
    assert (status, sent) == (413, 0)
    # chunked, no length: refused as soon as the count passes the limit, long before the end
    chunk = b"x" * 32 * 1024
    status, sent = raw_post(port, path, {"Content-Type": "multipart/form-data; boundary=x"}, [chunk] * 400, chunked=True)
    assert status == 413 and sent <= MAX_UPLOAD_BYTES + 4 * len(chunk) < 400 * len(chunk)


def test_a_recipe_file_still_uploads_through_the_limit(hmi_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, _ = hmi_server
    sign_in(browser, base, "emil", "/recipes")
    open_page(browser, base + "/recipes?name=demo-part")
    recipe = tmp_path / "demo-part.toml"
    shutil.copy(REPO / "recipes" / "demo-part.toml", recipe)
    file_input = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "input[type=file]"), what="the upload input")
    file_input.send_keys(str(recipe))
    wait_for(lambda: "loaded into the form" in browser.page_source, what="the upload to load the form")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "hmi.pem", directory / "hmi.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def session_cookie_flags(headers: http.client.HTTPMessage) -> set[str]:
    (cookie,) = [v for k, v in headers.items() if k.lower() == "set-cookie" and v.startswith("session=")]
    return {f.strip().lower() for f in cookie.split(";")[1:]}


def test_https_with_a_self_signed_certificate_and_a_secure_cookie(tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate (apt-get install openssl)")
    cert, key = make_certificate(tmp_path)
    port = free_port()
    proc = serve(tmp_path, port, cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))  # trusts exactly this certificate
    try:
        wait_up(f"https://127.0.0.1:{port}/login", proc, trusting)
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=trusting, timeout=10)
        conn.request("GET", "/login")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        assert_secured("/login", r.status, {k.lower(): v for k, v in r.getheaders()})
        assert {"secure", "httponly", "max-age=1800", "samesite=lax", "path=/"} <= session_cookie_flags(r.headers)
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        conn.close()
        # plain HTTP on the TLS port gets no page
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            plain.request("GET", "/login")
            assert plain.getresponse().status >= 400
        # and a real browser signs in over it: its cookie is Secure, HttpOnly, gone with the idle timeout
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
            opts.add_argument(arg)
        opts.accept_insecure_certs = True  # self-signed, made a moment ago
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            sign_in(driver, f"https://127.0.0.1:{port}", "emil")
            (session,) = [c for c in driver.get_cookies() if c["name"] == "session"]
            assert session["secure"] and session["httpOnly"]
            assert 1700 <= session["expiry"] - time.time() <= 1800
        finally:
            driver.quit()
    finally:
        stop(proc)


def test_https_through_a_trusted_proxy_marks_the_cookie_secure(hmi_server):
    """What nginx in front says (deploy/README.md): X-Forwarded-Proto https from 127.0.0.1."""
    base, _ = hmi_server
    _, plain_headers, _ = get(base + "/login")
    assert "secure" not in {f.strip().lower() for f in plain_headers["set-cookie"].split(";")}
    _, proxied, _ = get(base + "/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.2.3"})
    assert "secure" in {f.strip().lower() for f in proxied["set-cookie"].split(";")}


def test_a_forwarded_prefix_cannot_send_a_redirect_off_site(hmi_server):
    base, _ = hmi_server
    status, headers, _ = get(base + "/history", headers={"X-Forwarded-Prefix": "//evil.example"})
    assert status == 307 and headers["location"] == "/login?next=/history"


def test_a_bad_certificate_is_a_configuration_error(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    with pytest.raises(ConfigError, match="cannot use it with"):
        check_tls_files(HmiConfig(certfile=cert, keyfile=key))
    with pytest.raises(ConfigError, match="not found"):
        check_tls_files(HmiConfig(certfile=tmp_path / "missing.pem", keyfile=key))
