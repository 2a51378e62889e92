"""Real tools through a real `rr run`, configured only by what `rr env` prints
(docs/clients.md): git clone and push (git http-backend), pip from a token
index, npm with a scoped package, curl and wget — against local TLS servers
that accept nothing but the secret rr injects. Byte counts and digests are
compared end to end. Then proxy authentication the way standard clients do it:
the 407 challenge (rr_proxy_auth_challenge), WWW-Authenticate on rr's 401, and
error messages that clients printing one field can show."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.tools import Site, ToolServer, npm_package, simple_index, wheel
from rr_addon.testing.wait import eventually

UPSTREAM_TOKEN = "UPSTREAM_tools_9f3a"
KEY = "KEY_tools_c4e1"
TOOLS = ("git", "curl", "wget", "npm", "node")

POLICY = """
targets:
  - name: tools
    hosts: ["127.0.0.1:{port}", "localhost:{port}"]
    allow_private_addresses: true
    allow_encoded_slashes: true
    credentials: [{{name: ci, kind: basic, username: ci, secret: {token}}}]
  - name: strict
    hosts: ["127.0.0.1:{port2}", "localhost:{port2}"]
    allow_private_addresses: true
    credentials: [{{name: ci, kind: basic, username: ci, secret: {token}}}]
proxies:
  - name: ci
    targets: [{{target: tools}}, {{target: strict}}]
    credentials:
      - {{name: runner, auth: api_key, secret: {{env: TOOLS_KEY}}}}
"""


def _require_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        message = f"client tools not installed: {', '.join(missing)}"
        if os.environ.get("RR_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (RR_REQUIRE_SERVICES=1: .ci/run installs them)")
        pytest.skip(message)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git(*args: str, cwd: Path | None = None, env: dict | None = None) -> str:
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd or "/tmp"), "GIT_CONFIG_NOSYSTEM": "1"}
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env={**base, **ident, **(env or {})}, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _require_tools()
    root = tmp_path_factory.mktemp("tools-site")
    s = Site(git_root=root / "git")
    # a bare repository with a 2 MB file (several packfile chunks)
    work = root / "seed"
    work.mkdir()
    s.blob = os.urandom(2 * 1024 * 1024)
    (work / "big.bin").write_bytes(s.blob)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-qm", "seed", cwd=work)
    git("clone", "-q", "--bare", str(work), str(s.git_root / "repo.git"))
    git("config", "http.receivepack", "true", cwd=s.git_root / "repo.git")
    s.head = git("rev-parse", "HEAD", cwd=work).strip()
    # a PEP 503 index with a wheel built here
    s.wheel_name, s.wheel = wheel("rrtoolpkg", "1.0.0", "VALUE = 'installed through rr'\n")
    simple_index(s, "rrtoolpkg", s.wheel_name, s.wheel)
    # a file for curl and wget
    s.download = os.urandom(5 * 1024 * 1024 + 123)
    s.files["/files/download.bin"] = s.download
    return s


@pytest.fixture(scope="module")
def servers(site, pki):
    with ToolServer(pki, site, "ci", UPSTREAM_TOKEN) as tools, ToolServer(pki, site, "ci", UPSTREAM_TOKEN) as strict:
        base = f"https://localhost:{tools.port}"  # npm's proxy agent checks a tunnelled IP address against "localhost"
        site.tarballs = {
            "rr-plain-pkg": npm_package(site, base, "rr-plain-pkg", "1.0.0", extra_bytes=300_000),
            "@rrscope/util": npm_package(site, base, "@rrscope/util", "2.1.0", extra_bytes=200_000),
        }
        yield tools, strict


def _home(tmp_path_factory, servers, name):
    tools, strict = servers
    home = tmp_path_factory.mktemp(name)
    prepare_home(home, POLICY.format(port=tools.port, port2=strict.port, token=UPSTREAM_TOKEN), env={"TOOLS_KEY": KEY})
    return home


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, servers, pki):
    home = _home(tmp_path_factory, servers, "rr-clients")
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.tools, p.strict = servers
        p.env_file = home / "rr-env.sh"
        p.env_file.write_text(rr_env(home, p.port))
        yield p


def rr_env(home: Path, port: int) -> str:
    """`rr env` without --listen: the running data plane's address, read from the database."""
    env = lambda: rr_cli(home, "env", "--proxy", "ci", "--credential", "runner", "--no-proxy", "").output  # noqa: E731
    out = eventually(lambda: f"@127.0.0.1:{port}\n" in (o := env()) and o, what=lambda: f"the running data plane in `rr env`: {env()}")
    assert f"export HTTPS_PROXY=http://ci:${{TOOLS_KEY}}@127.0.0.1:{port}\n" in out, out
    return out


def tool(proxy, command: str, cwd: Path, *, env_file: Path | None = None, extra: dict | None = None, check: bool = True):
    """Run `command` in bash after sourcing the `rr env` output, with nothing else inherited."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8", "TOOLS_KEY": KEY, "GIT_TERMINAL_PROMPT": "0", **(extra or {})}
    source = f"source {env_file or proxy.env_file} && " if env_file is not False else ""
    r = subprocess.run(["bash", "-c", source + command], cwd=cwd, env=env, capture_output=True, text=True, timeout=90)
    if check and r.returncode != 0:
        raise AssertionError(f"{command!r} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}\nrr log:\n{proxy.log_text()[-3000:]}")
    return r


def injected_only(server, since: int) -> None:
    """Everything the server saw since `since` carried the injected secret and nothing else (no rr key)."""
    seen = server.seen[since:]
    assert seen and all(s.status < 400 for s in seen), [(s.method, s.path, s.status) for s in seen]


# ---------------------------------------------------------------------------- git


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/2"])
def test_git_clone(proxy, site, tmp_path, version):
    before = len(proxy.tools.seen)
    url = f"https://127.0.0.1:{proxy.tools.port}/git/repo.git"
    tool(proxy, f"git -c http.version={version} clone -q {url} clone", tmp_path)
    assert (tmp_path / "clone" / "big.bin").read_bytes() == site.blob
    assert git("rev-parse", "HEAD", cwd=tmp_path / "clone").strip() == site.head
    injected_only(proxy.tools, before)
    sent = sum(s.sent for s in proxy.tools.seen[before:] if s.method == "POST")
    assert sent > len(site.blob) // 2  # the packfile went through rr (random bytes do not compress)


def _push(proxy, site, tmp_path, version, branch):
    url = f"https://127.0.0.1:{proxy.tools.port}/git/repo.git"
    tool(proxy, f"git -c http.version={version} clone -q {url} clone", tmp_path)
    work = tmp_path / "clone"
    data = os.urandom(3 * 1024 * 1024)  # over git's 1 MiB http.postBuffer: sent chunked, length unknown
    (work / "pushed.bin").write_bytes(data)
    git("checkout", "-q", "-b", branch, cwd=work)
    git("add", "pushed.bin", cwd=work)
    git("commit", "-qm", "pushed through rr", cwd=work)
    before = len(proxy.tools.seen)
    tool(proxy, f"git -c http.version={version} push -q origin {branch}", work)
    bare = site.git_root / "repo.git"
    assert git("rev-parse", branch, cwd=bare).strip() == git("rev-parse", "HEAD", cwd=work).strip()
    blob = subprocess.run(["git", "cat-file", "blob", f"{branch}:pushed.bin"], cwd=bare, capture_output=True, check=True).stdout
    assert sha256(blob) == sha256(data)
    injected_only(proxy.tools, before)
    assert sum(s.received for s in proxy.tools.seen[before:]) > len(data)


def test_git_push_http1(proxy, site, tmp_path):
    _push(proxy, site, tmp_path, "HTTP/1.1", "push-h1")


def test_git_push_http2(proxy, site, tmp_path):
    _push(proxy, site, tmp_path, "HTTP/2", "push-h2")


# ---------------------------------------------------------------------------- pip


def test_pip_install_from_an_index_that_needs_a_token(proxy, site, tmp_path):
    before = len(proxy.tools.seen)
    index = f"https://127.0.0.1:{proxy.tools.port}/simple/"
    tool(
        proxy,
        f"{sys.executable} -m pip install -q --no-cache-dir --disable-pip-version-check --no-deps --target {tmp_path / 'lib'} --index-url {index} rrtoolpkg",
        tmp_path,
        extra={"PIP_CONFIG_FILE": "/dev/null"},
    )
    assert (tmp_path / "lib" / "rrtoolpkg.py").read_text() == "VALUE = 'installed through rr'\n"
    served = [s for s in proxy.tools.seen[before:] if s.path.endswith(site.wheel_name)]
    assert served and served[-1].sent == len(site.wheel)
    injected_only(proxy.tools, before)


# ---------------------------------------------------------------------------- npm


def _npm(proxy, tmp_path, registry_port, *packages, check=True):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "package.json").write_text('{"name": "p", "version": "1.0.0", "private": true}')
    registry = f"https://localhost:{registry_port}/"
    extra = {"NPM_CONFIG_REGISTRY": registry, "NPM_CONFIG_CACHE": str(tmp_path / "cache"), "NPM_CONFIG_AUDIT": "false",
             "NPM_CONFIG_FUND": "false", "NPM_CONFIG_UPDATE_NOTIFIER": "false", "NPM_CONFIG_USERCONFIG": "/dev/null"}
    return tool(proxy, f"npm install --no-package-lock {' '.join(packages)}", project, extra=extra, check=check)


def test_npm_install_plain_and_scoped(proxy, site, tmp_path):
    before = len(proxy.tools.seen)
    _npm(proxy, tmp_path, proxy.tools.port, "rr-plain-pkg", "@rrscope/util")
    modules = tmp_path / "project" / "node_modules"
    for name in ("rr-plain-pkg", "@rrscope/util"):
        out = subprocess.run(["node", "-e", f"process.stdout.write(require({name!r}))"], cwd=tmp_path / "project", capture_output=True, text=True, check=True)
        assert out.stdout == name + ("@1.0.0" if name == "rr-plain-pkg" else "@2.1.0")
    import gzip
    import io
    import tarfile

    for name, tgz in site.tarballs.items():
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tgz))) as tar:
            expected = tar.extractfile("package/data.bin").read()
        assert sha256((modules / name / "data.bin").read_bytes()) == sha256(expected)
    paths = [s.path for s in proxy.tools.seen[before:]]
    assert "/@rrscope%2Futil" in paths  # npm asked for @rrscope%2futil: rr forwarded the canonical, upper-case form
    injected_only(proxy.tools, before)


def test_npm_scoped_package_on_a_target_without_the_opt_in_says_why(proxy, tmp_path):
    before = len(proxy.strict.seen)
    r = _npm(proxy, tmp_path, proxy.strict.port, "@rrscope/util", check=False)
    assert r.returncode != 0
    output = r.stdout + r.stderr
    # npm prints the status line and stringifies the JSON `error` object: the reason phrase carries the message
    assert "400 Bad Request (rr invalid-request: encoded '/' or '\\' in path" in output, output
    assert "allow_encoded_slashes" in output
    assert proxy.strict.seen[before:] == []


# ---------------------------------------------------------------------------- curl and wget


def test_curl_with_curl_ca_bundle(proxy, site, tmp_path):
    before = len(proxy.tools.seen)
    url = f"https://127.0.0.1:{proxy.tools.port}/files/download.bin"
    tool(proxy, f"curl -sS --fail -o out.bin {url}", tmp_path)
    assert sha256((tmp_path / "out.bin").read_bytes()) == sha256(site.download)
    injected_only(proxy.tools, before)


def test_wget_with_lower_case_proxy_variables(proxy, site, tmp_path):
    before = len(proxy.tools.seen)
    url = f"https://127.0.0.1:{proxy.tools.port}/files/download.bin"
    # wget reads only https_proxy, and its CA only from a wgetrc (WGETRC, written by rr env)
    tool(proxy, f"unset HTTPS_PROXY HTTP_PROXY; wget -q -O out.bin {url}", tmp_path)
    data = (tmp_path / "out.bin").read_bytes()
    assert len(data) == len(site.download) and sha256(data) == sha256(site.download)
    injected_only(proxy.tools, before)


PYTHON_CLIENTS = """
import hashlib, sys
import httpx, requests
url = sys.argv[1]
a = requests.get(url, timeout=30)  # REQUESTS_CA_BUNDLE, HTTPS_PROXY
b = httpx.get(url, timeout=30)  # SSL_CERT_FILE, HTTPS_PROXY (trust_env)
print(a.status_code, b.status_code, hashlib.sha256(a.content).hexdigest(), hashlib.sha256(b.content).hexdigest())
"""


def test_python_requests_and_httpx(proxy, site, tmp_path):
    before = len(proxy.tools.seen)
    (tmp_path / "fetch.py").write_text(PYTHON_CLIENTS)
    url = f"https://127.0.0.1:{proxy.tools.port}/files/download.bin"
    r = tool(proxy, f"{sys.executable} fetch.py {url}", tmp_path)
    digest = sha256(site.download)
    assert r.stdout.split() == ["200", "200", digest, digest]
    injected_only(proxy.tools, before)


def test_export_keeps_allow_encoded_slashes(proxy):
    exported = rr_cli(proxy.home, "export").output
    assert exported.count("allow_encoded_slashes: true") == 1


# ---------------------------------------------------------------------------- proxy authentication


@pytest.fixture(scope="module")
def challenging(tmp_path_factory, servers, pki):
    """rr with rr_proxy_auth_challenge: a CONNECT without Proxy-Authorization gets 407."""
    home = _home(tmp_path_factory, servers, "rr-challenge")
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", "rr_proxy_auth_challenge=true"]) as p:
        p.tools, p.strict = servers
        p.env_file = home / "rr-env.sh"
        p.env_file.write_text(rr_env(home, p.port))
        yield p


def test_curl_proxy_anyauth_answers_the_407(challenging, site, tmp_path):
    url = f"https://127.0.0.1:{challenging.tools.port}/files/download.bin"
    r = tool(challenging, f"curl -v -sS --fail --proxy-anyauth -o out.bin {url}", tmp_path)
    assert "< HTTP/1.1 407 Proxy Authentication Required (rr unauthenticated: no proxy credential" in r.stderr
    assert '< proxy-authenticate: Basic realm="rr"' in r.stderr and "> Proxy-Authorization: Basic " in r.stderr
    assert sha256((tmp_path / "out.bin").read_bytes()) == sha256(site.download)


def test_plain_http_through_the_proxy_is_challenged_too(challenging, tmp_path):
    # absolute-form http:// requests carry Proxy-Authorization themselves: 407 without it, then the credential is sent
    url = f"http://127.0.0.1:{challenging.tools.port}/files/download.bin"
    r = tool(challenging, f"curl -v -sS --proxy-anyauth -o body.json -w '%{{http_code}}' {url}", tmp_path)
    assert "< HTTP/1.1 407 Proxy Authentication Required (rr unauthenticated: no caller credential presented" in r.stderr
    assert "> Proxy-Authorization: Basic " in r.stderr
    # authenticated now, and refused for the scheme (the target is https only), not for the credential
    assert r.stdout == "403" and '"code": "unknown-target"' in (tmp_path / "body.json").read_text()
    r = tool(challenging, f"curl -sS -o /dev/null -w '%{{http_code}}' --noproxy '' -x http://127.0.0.1:{challenging.port} {url}", tmp_path)
    assert r.stdout == "407"
    # a CONNECT that carries a credential, even a wrong one, is accepted: the readable 401 comes inside the tunnel
    with socket.create_connection(("127.0.0.1", challenging.port), timeout=10) as s:
        s.sendall(f"CONNECT 127.0.0.1:{challenging.tools.port} HTTP/1.1\r\nProxy-Authorization: Basic Y2k6d3Jvbmc=\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")


def test_git_with_its_default_proxy_auth_method(challenging, site, tmp_path):
    # libcurl's "anyauth" (git's default) sends the CONNECT without credentials and waits for a challenge
    url = f"https://127.0.0.1:{challenging.tools.port}/git/repo.git"
    tool(challenging, f"unset GIT_HTTP_PROXY_AUTHMETHOD; git clone -q {url} clone", tmp_path)
    assert (tmp_path / "clone" / "big.bin").read_bytes() == site.blob


def test_connect_without_credentials_gets_a_json_407(challenging):
    with httpx.Client(proxy=f"http://127.0.0.1:{challenging.port}", verify=False, timeout=10) as c:
        with pytest.raises(httpx.ProxyError, match="407"):
            # in-band channels need a listener without the challenge (docs/clients.md)
            c.get(f"https://127.0.0.1:{challenging.tools.port}/files/download.bin", headers={"X-RR-Authorization": KEY})

    with socket.create_connection(("127.0.0.1", challenging.port), timeout=10) as s:
        s.sendall(f"CONNECT 127.0.0.1:{challenging.tools.port} HTTP/1.1\r\nHost: 127.0.0.1:{challenging.tools.port}\r\n\r\n".encode())
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 407 ")
    assert b'\r\nproxy-authenticate: Basic realm="rr"' in head
    import json

    doc = json.loads(body)
    assert doc["error"]["code"] == "unauthenticated" and doc["message"].startswith("rr unauthenticated: no proxy credential")


def _java(tmp_path, proxy, url: str, user: str, password: str):
    src = tmp_path / "Fetch.java"
    src.write_text(JAVA_FETCH)
    store = tmp_path / "trust.p12"
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "rr", "-file", str(proxy.ca), "-keystore", str(store),
                    "-storetype", "PKCS12", "-storepass", "changeit"], check=True, capture_output=True)
    cmd = ["java", "-Djdk.http.auth.tunneling.disabledSchemes=", f"-Djavax.net.ssl.trustStore={store}",
           "-Djavax.net.ssl.trustStorePassword=changeit", str(src), "127.0.0.1", str(proxy.port), user, password, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


JAVA_FETCH = """
import java.net.*;
import java.net.http.*;
import java.security.MessageDigest;
import java.util.HexFormat;

public class Fetch {
    public static void main(String[] a) throws Exception {
        String user = a[2], pass = a[3];
        HttpClient c = HttpClient.newBuilder()
            .proxy(ProxySelector.of(new InetSocketAddress(a[0], Integer.parseInt(a[1]))))
            .authenticator(new Authenticator() {
                protected PasswordAuthentication getPasswordAuthentication() {
                    return getRequestorType() == RequestorType.PROXY ? new PasswordAuthentication(user, pass.toCharArray()) : null;
                }
            })
            .build();
        HttpResponse<byte[]> r = c.send(HttpRequest.newBuilder(URI.create(a[4])).build(), HttpResponse.BodyHandlers.ofByteArray());
        System.out.println(r.statusCode() + " " + r.body().length + " " + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(r.body())));
    }
}
"""


def test_java_http_client_answers_the_407(challenging, site, tmp_path):
    if shutil.which("java") is None or shutil.which("keytool") is None:
        _require_tools_named("java", "keytool")
    url = f"https://127.0.0.1:{challenging.tools.port}/files/download.bin"
    r = _java(tmp_path, challenging, url, "ci", KEY)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["200", str(len(site.download)), sha256(site.download)]


def _require_tools_named(*names: str) -> None:
    message = f"client tools not installed: {', '.join(names)}"
    if os.environ.get("RR_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (RR_REQUIRE_SERVICES=1: .ci/run installs them)")
    pytest.skip(message)


def test_git_key_in_the_remote_url_answers_rrs_401(proxy, site, tmp_path):
    # no proxy credential at all: rr's 401 carries WWW-Authenticate, so git sends the URL's user:key (Basic)
    url = f"https://ci:{KEY}@127.0.0.1:{proxy.tools.port}/git/repo.git"
    bare_proxy = f"http://127.0.0.1:{proxy.port}"
    tool(proxy, f"export https_proxy={bare_proxy} HTTPS_PROXY={bare_proxy}; git clone -q {url} clone", tmp_path)
    assert (tmp_path / "clone" / "big.bin").read_bytes() == site.blob


def test_rrs_401_challenges_and_says_why_in_one_field(proxy):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=f"http://127.0.0.1:{proxy.port}", verify=verify, timeout=10) as c:
        r = c.get(f"https://127.0.0.1:{proxy.tools.port}/files/download.bin")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="rr"'
        doc = r.json()
        assert set(doc["error"]) == {"code", "message", "request_id"} and doc["error"]["code"] == "unauthenticated"
        assert doc["message"] == f"rr unauthenticated: {doc['error']['message']}"
        assert r.reason_phrase.startswith("Unauthorized (rr unauthenticated: no caller credential presented")
        # the in-band channel still works on a listener without the challenge
        r = c.get(f"https://127.0.0.1:{proxy.tools.port}/files/download.bin", headers={"X-RR-Authorization": KEY})
        assert r.status_code == 200 and sha256(r.content) == sha256(proxy_site_download(proxy))


def proxy_site_download(proxy) -> bytes:
    return proxy.tools.server.RequestHandlerClass.site.files["/files/download.bin"]
