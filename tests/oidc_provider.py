"""A real OpenID provider for the SSO tests: ``tests/oidc/provider.mjs`` (panva/oidc-provider on
Node.js) on 127.0.0.1.

``npm ci`` runs once per lock file into ``test-artifacts/oidc-node/<hash of the lock file>/``
(under a file lock: parallel test processes share it). Without node or npm the tests are
skipped, or fail under ``MODELPORT_REQUIRE_SERVICES=1``. The provider signs with an RSA key
made here, so a test can sign tokens with the provider's own key (and with another one).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

HERE = Path(__file__).resolve().parent / "oidc"
CACHE = Path(__file__).resolve().parents[1] / "test-artifacts" / "oidc-node"
CLIENT_ID = "modelport"
START_TIMEOUT_S = 30


def new_rsa_key() -> tuple[Any, dict[str, Any]]:
    """An RSA key and its private JWK (with a fresh ``kid``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    jwk.pop("key_ops", None)  # PyJWT writes ["sign"]: the provider would not verify with it
    jwk.update(kid=uuid.uuid4().hex[:12], alg="RS256", use="sig")
    return key, jwk


def node_modules() -> Path:
    """The folder holding ``provider.mjs`` and its installed packages (``npm ci``, cached)."""
    from tests.conftest import missing_service

    for tool in ("node", "npm"):
        if not shutil.which(tool):
            missing_service(f"needs Node.js and npm for the OpenID provider ({tool} not found)")
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    if int(version.strip().lstrip("v").split(".")[0] or 0) < 20:
        missing_service(f"needs Node.js >= 20 for oidc-provider 9 (found {version.strip()})")
    lock = (HERE / "package-lock.json").read_bytes()
    folder = CACHE / hashlib.sha256(lock).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not (folder / "node_modules" / ".installed").exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(HERE / name, folder / name)
            result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                                    cwd=folder, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                pytest.fail(f"npm ci for the OpenID provider failed:\n{result.stderr[-2000:]}")
            (folder / "node_modules" / ".installed").touch()
        shutil.copyfile(HERE / "provider.mjs", folder / "provider.mjs")
    return folder


@dataclass
class OidcProvider:
    issuer: str
    accounts_file: Path
    client_id: str
    client_secret: str
    signing_key: Any  # the provider's private RSA key
    signing_jwk: dict[str, Any]
    process: subprocess.Popen
    output: list[str] = field(default_factory=list)

    def set_accounts(self, accounts: list[dict[str, Any]]) -> None:
        """Who may sign in: [{sub, email, name, groups, disabled}]; read at every lookup."""
        temporary = self.accounts_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(accounts))
        temporary.replace(self.accounts_file)

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"


@contextlib.contextmanager
def run_provider(workdir: Path, redirect_uris: list[str],
                 post_logout_redirect_uris: list[str]) -> Iterator[OidcProvider]:
    """Start the provider for one confidential client; stop it (and wait) on exit."""
    folder = node_modules()
    workdir.mkdir(parents=True, exist_ok=True)
    key, jwk = new_rsa_key()
    secret = uuid.uuid4().hex
    accounts = workdir / "accounts.json"
    accounts.write_text("[]")
    config = workdir / "provider.json"
    config.write_text(json.dumps({
        "accounts_file": str(accounts),
        "jwks": {"keys": [jwk]},
        "clients": [{"client_id": CLIENT_ID, "client_secret": secret,
                     "redirect_uris": redirect_uris,
                     "post_logout_redirect_uris": post_logout_redirect_uris}],
    }))
    process = subprocess.Popen(["node", str(folder / "provider.mjs"), str(config)], cwd=folder,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "NODE_ENV": "test"})
    output: list[str] = []
    first: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if not first and line.startswith("{"):
                first.append(line)
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(START_TIMEOUT_S) or not first:
            pytest.fail("the OpenID provider did not start:\n" + "".join(output[-40:]))
        issuer = json.loads(first[0])["issuer"]
        provider = OidcProvider(issuer=issuer, accounts_file=accounts, client_id=CLIENT_ID,
                                client_secret=secret, signing_key=key, signing_jwk=jwk,
                                process=process, output=output)
        document = requests.get(provider.discovery_url, timeout=10).json()
        assert document["issuer"] == issuer
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory) -> Iterator[OidcProvider]:
    """A provider whose client redirects to Django's test client (``http://testserver``)."""
    with run_provider(tmp_path_factory.mktemp("oidc"),
                      ["http://testserver/oidc/callback/"],
                      ["http://testserver/login/"]) as provider:
        yield provider


def configure(settings, provider: OidcProvider, **extra: Any) -> None:
    """Point the platform at ``provider`` (the settings fixture restores everything)."""
    from teams import sso

    settings.MODELPORT_OIDC_ISSUER = provider.issuer
    settings.OIDC_RP_CLIENT_ID = provider.client_id
    settings.OIDC_RP_CLIENT_SECRET = provider.client_secret
    settings.MODELPORT_OIDC_PROVIDER_NAME = "Test IdP"
    for name, value in extra.items():
        setattr(settings, name, value)
    sso.forget_discovery()
