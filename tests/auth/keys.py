"""Real keys for the JWT tests, made with cryptography, and a JWKS server on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

RSA_PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC = RSA_PRIVATE.public_key()
RSA_PUBLIC_PEM = RSA_PUBLIC.public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
OTHER_RSA_PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_PRIVATE = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC = EC_PRIVATE.public_key()


def jwk(public: Any, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK of *public*, with its kid and alg."""
    to_jwk = RSAAlgorithm.to_jwk if alg.startswith(("RS", "PS")) else ECAlgorithm.to_jwk
    found: dict[str, Any] = to_jwk(public, as_dict=True)
    return {**found, "kid": kid, "alg": alg, "use": "sig"}


def token(
    claims: dict[str, Any], key: Any = RSA_PRIVATE, alg: str = "RS256", **headers: Any
) -> str:
    """A signed token; ``exp`` an hour from now unless *claims* say otherwise."""
    payload = {"exp": int(time.time()) + 3600, **claims}
    return jwt.encode(payload, key, algorithm=alg, headers=headers or None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand: HS256-signed with *secret*, or unsigned when it is None."""
    payload = {"exp": int(time.time()) + 3600, **claims}
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


class JWKSServer:
    """A real HTTP server on 127.0.0.1, port 0, serving a key set the test changes.

    ``hits`` counts the fetches; ``gate``, when set to an unset Event, holds every fetch until
    it is set; `stop` takes the server down.
    """

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.hits = 0
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.hits += 1
                gate = outer.gate
                if gate is not None:
                    gate.wait(10)
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/jwks.json"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._up = True

    def stop(self) -> None:
        if self._up:
            self._up = False
            self._server.shutdown()
            self._thread.join(5)
            self._server.server_close()


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait (bounded) for *condition*, which another thread makes true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
