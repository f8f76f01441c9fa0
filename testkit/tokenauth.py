"""A real distribution registry (Debian's docker-registry 2.8) configured for token authentication,
with a token server of the tests' own whose tokens die within seconds.

Registry 2.8 accepts a token for 60 s past its `exp` and wants the token's `kid` to be the libtrust
key ID of the signing key; an `exp` set 60 s early makes a token die after `lifetime` seconds.
The server can also claim a longer `expires_in` than the token really has (`advertised`), so that
a client must recover from a 401 with a cached token rather than from the clock.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ISSUER, SERVICE = "harness-test-issuer", "harness-test-registry"


def libtrust_key_id(key: ec.EllipticCurvePrivateKey) -> str:
    """docker/libtrust's key ID: base32 of the first 240 bits of the SHA-256 of the public key's DER."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


def certificate(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TokenServer:
    """Issues ES256 tokens for the one user it knows, granting every action asked for."""

    username: str
    password: str
    lifetime: float = 3.0
    advertised: float | None = None         # the expires_in it tells clients (None: the truth)
    issued: list[str] = field(default_factory=list)     # user agent of each token request
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def token(self, scope: str, account: str) -> str:
        now = int(time.time())
        access = []
        for item in filter(None, scope.split(" ")):
            kind, name, actions = item.split(":", 2) if item.count(":") >= 2 else (item, "", "")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        claims = {"iss": ISSUER, "sub": account, "aud": SERVICE, "nbf": now - 5, "iat": now,
                  "exp": now + int(self.lifetime) - 60, "jti": secrets.token_hex(8), "access": access}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": libtrust_key_id(self.key)})

    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                expected = "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                server.issued.append(self.headers.get("User-Agent", ""))
                token = server.token(" ".join(query.get("scope", [])), server.username)
                body = json.dumps({"token": token, "access_token": token,
                                   "expires_in": server.advertised or server.lifetime,
                                   "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:                   # no OAuth2 endpoint: clients fall back to GET
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:       # quiet
                pass

        return Handler


class TokenRegistry:
    """`docker-registry serve` on loopback, trusting the token server's key; both stopped on exit."""

    def __init__(self, folder: Path, server: TokenServer):
        self.folder, self.server = folder, server
        self.port, self.token_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self) -> TokenRegistry:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "root.crt").write_bytes(certificate(self.server.key))
        config = {"version": 0.1, "log": {"level": "info"},
                  "storage": {"filesystem": {"rootdirectory": str(self.folder / "data")}},
                  "http": {"addr": self.address},
                  "auth": {"token": {"realm": f"http://127.0.0.1:{self.token_port}/token", "service": SERVICE,
                                     "issuer": ISSUER, "rootcertbundle": str(self.folder / "root.crt")}}}
        (self.folder / "config.yml").write_text(json.dumps(config))          # YAML is a superset of JSON
        self.http = ThreadingHTTPServer(("127.0.0.1", self.token_port), self.server.handler())
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.log = open(self.folder / "registry.log", "w")
        self.process = subprocess.Popen(["docker-registry", "serve", str(self.folder / "config.yml")],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the token registry did not start: "
                                       + (self.folder / "registry.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.http.shutdown()
        self.log.close()

    def docker_config(self, folder: Path) -> Path:
        """A DOCKER_CONFIG folder holding this registry's login, as `docker login` writes it."""
        folder.mkdir(parents=True, exist_ok=True)
        auth = base64.b64encode(f"{self.server.username}:{self.server.password}".encode()).decode()
        (folder / "config.json").write_text(json.dumps({"auths": {self.address: {"auth": auth}}}))
        return folder
