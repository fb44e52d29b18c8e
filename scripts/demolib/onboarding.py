"""Home Assistant's onboarding, done through its HTTP API as the frontend does it.

The frontend's five screens come down to four steps (homeassistant/components/onboarding/
views.py, the same in 2025.4 and 2026.10): ``POST /api/onboarding/users`` creates the
owner and answers an authorization code, exchanged at ``/auth/token`` for tokens; with
the access token, ``core_config``, ``analytics`` and ``integration`` are each marked
done. The location and units are not sent: the demo writes them to .storage/core.config
before Home Assistant starts (ha_config.CORE_CONFIG), so no step can change them.

The owner's password is generated once per work folder and kept in ``login.json``
(mode 0600), so a run with ``--keep`` prints it again and signs in with it.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.demolib import DemoError
from scripts.demolib.client import http_get, http_post

LOGIN_FILE = "login.json"
OWNER_NAME = "Demo owner"
USERNAME = "demo"
LANGUAGE = "en"
# After the user step, in the frontend's order.
STEPS_AFTER_USER = ("core_config", "analytics", "integration")


@dataclass(frozen=True, slots=True)
class Login:
    """The owner account the demo made."""

    username: str
    password: str

    @classmethod
    def new(cls) -> Login:
        return cls(USERNAME, secrets.token_urlsafe(12))

    @classmethod
    def load(cls, path: Path) -> Login | None:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(stored["username"]), str(stored["password"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        """Readable by this user only: it is the owner's password."""
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({"username": self.username, "password": self.password}, file)


@dataclass
class HaSession:
    """A signed-in client of Home Assistant; renews its access token when it expires."""

    url: str
    access_token: str
    refresh_token: str

    @property
    def client_id(self) -> str:
        return client_id(self.url)

    @classmethod
    def from_code(cls, url: str, code: str) -> HaSession:
        status, body = http_post(
            f"{url}/auth/token",
            form={"grant_type": "authorization_code", "code": code, "client_id": client_id(url)},
        )
        tokens = _expect(status, body, "exchanging the authorization code at /auth/token")
        return cls(url, str(tokens["access_token"]), str(tokens["refresh_token"]))

    @classmethod
    def log_in(cls, url: str, login: Login) -> HaSession:
        """Home Assistant's own login flow, with the username and password."""
        status, body = http_post(
            f"{url}/auth/login_flow",
            json_body={
                "client_id": client_id(url),
                "handler": ["homeassistant", None],
                "redirect_uri": redirect_uri(url),
            },
        )
        flow = _expect(status, body, "starting a login flow")
        status, body = http_post(
            f"{url}/auth/login_flow/{flow['flow_id']}",
            json_body={
                "client_id": client_id(url),
                "username": login.username,
                "password": login.password,
            },
        )
        result = _expect(status, body, f"logging in as {login.username}")
        if result.get("type") != "create_entry":
            raise DemoError(f"logging in as {login.username} failed: {result.get('errors')}")
        return cls.from_code(url, str(result["result"]))

    def get(self, path: str, timeout: float = 3.0) -> tuple[int, Any]:
        status, body = http_get(self.url + path, self.access_token, timeout)
        if status == 401 and self._refresh():
            status, body = http_get(self.url + path, self.access_token, timeout)
        return status, body

    def post(self, path: str, json_body: Any = None) -> tuple[int, Any]:
        return http_post(self.url + path, json_body=json_body, token=self.access_token)

    def revoke(self) -> None:
        """End the session (Home Assistant keeps every refresh token until revoked)."""
        http_post(f"{self.url}/auth/revoke", form={"token": self.refresh_token}, timeout=5.0)

    def _refresh(self) -> bool:
        # Access tokens live 30 minutes; a demo runs longer.
        status, body = http_post(
            f"{self.url}/auth/token",
            form={
                "grant_type": "refresh_token",
                "refresh_token": self.refresh_token,
                "client_id": self.client_id,
            },
        )
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            return False
        self.access_token = str(body["access_token"])
        return True


def client_id(url: str) -> str:
    """The frontend's client id: the address it is served from."""
    return f"{url}/"


def redirect_uri(url: str) -> str:
    return f"{url}/?auth_callback=1"


@dataclass
class Onboarded:
    """What `onboard` did: the owner's login (None: made by hand) and a session."""

    login: Login | None
    session: HaSession | None
    fresh: bool  # the owner was made on this run
    notes: list[str] = field(default_factory=list)


def onboarding_steps(url: str) -> dict[str, bool]:
    """Each onboarding step and whether it is done (open, no token needed)."""
    status, body = http_get(f"{url}/api/onboarding", timeout=10.0)
    if status == 404:
        # Once every step is done, Home Assistant starts without its onboarding views.
        return dict.fromkeys(("user", *STEPS_AFTER_USER), True)
    steps = _expect(status, body, "reading GET /api/onboarding")
    return {str(step["step"]): bool(step["done"]) for step in steps}


def onboard(url: str, login_path: Path) -> Onboarded:
    """Finish Home Assistant's onboarding; sign in with the demo's owner account.

    A Home Assistant already onboarded (a kept work folder) keeps its owner; the session
    then comes from the saved login, when there is one.
    """
    steps = onboarding_steps(url)
    if not steps.get("user", False):
        login = Login.new()
        login.save(login_path)
        status, body = http_post(
            f"{url}/api/onboarding/users",
            json_body={
                "client_id": client_id(url),
                "name": OWNER_NAME,
                "username": login.username,
                "password": login.password,
                "language": LANGUAGE,
            },
        )
        answer = _expect(status, body, "creating the owner (POST /api/onboarding/users)")
        result = Onboarded(login, HaSession.from_code(url, str(answer["auth_code"])), True)
    else:
        saved = Login.load(login_path)
        if saved is None:
            if all(steps.values()):
                return Onboarded(None, None, False)
            raise DemoError(
                "Home Assistant's onboarding was started by hand and not finished: finish "
                "it in the browser, or run scripts/demo without --keep to start afresh"
            )
        try:
            result = Onboarded(saved, HaSession.log_in(url, saved), False)
        except DemoError as err:
            if not all(steps.values()):
                raise
            result = Onboarded(saved, None, False, [f"{err}; Home Assistant's status not shown"])
    session = result.session
    for step in STEPS_AFTER_USER:
        if session is not None and not steps.get(step, True):
            json_body = None
            if step == "integration":
                json_body = {"client_id": client_id(url), "redirect_uri": redirect_uri(url)}
            status, body = session.post(f"/api/onboarding/{step}", json_body)
            _expect(status, body, f"onboarding step {step} (POST /api/onboarding/{step})")
    left = [step for step, done in onboarding_steps(url).items() if not done]
    if left:
        result.notes.append(f"onboarding steps not done by the demo: {', '.join(left)}")
    return result


def check_metric(session: HaSession) -> dict[str, Any]:
    """Home Assistant's configuration (GET /api/config); DemoError unless it is metric."""
    status, body = session.get("/api/config", timeout=10.0)
    config: dict[str, Any] = _expect(status, body, "reading GET /api/config")
    units = config.get("unit_system", {})
    if units.get("temperature") != "°C" or units.get("length") != "km":
        raise DemoError(f"Home Assistant does not use metric units: {units}")
    return config


def _expect(status: int, body: Any, what: str) -> Any:
    if status != 200 or body is None:
        raise DemoError(f"{what}: HTTP {status}: {body}")
    return body
