"""GitHub Apps: their keys, their installations and the JWTs they sign.

Owns :class:`AppSpec` (app id, slug, RSA public key, owner, installations),
:class:`Installation` (an id and the repositories it covers), the ``apps``
section of the tokens file (:meth:`AppSpec.from_dict`), and
:class:`AppRegistry`, which checks the RS256 JWT an app signs with its
private key (PyJWT), tells which app signed it, and answers with GitHub's
messages when it cannot.

Knows nothing of tokens: :mod:`.auth` turns a verified app into a caller,
and an installation token is an ordinary ``kind="app"`` token with an expiry
(:meth:`~sentinel_celery.hub.state.HubState.mint_installation_token`).
:func:`generate_app_key` makes a key pair for tests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import HubError, unprocessable

INSTALLATION_TOKEN_LIFETIME = 3600.0  # seconds, as on GitHub
MAX_JWT_LIFETIME = 600  # GitHub refuses a JWT whose exp is more than ten minutes ahead

JWT_UNDECODABLE = "A JSON web token could not be decoded"
JWT_EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at which "
    "the assertion expires"
)
JWT_TOO_LONG = "'Expiration time' claim ('exp') is too far in the future"
JWT_ISSUED_LATER = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
)
PERMISSIONS_NOT_GRANTED = "The permissions requested are not granted to this installation."

# What every hub app may do: what Sentinel's mirror needs, and what shapes.app() reports.
PERMISSIONS: Mapping[str, str] = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "statuses": "write",
}
_LEVELS = ("read", "write", "admin")


@dataclass(frozen=True)
class AppKey:
    """An RSA key pair as PEM text: the private half signs JWTs, the hub keeps the public half."""

    private_pem: str = field(repr=False)
    public_pem: str


def generate_app_key(bits: int = 2048) -> AppKey:
    """A fresh RSA key pair, like the one GitHub lets an app owner download."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return AppKey(private_pem, public_pem_of(private_pem))


def public_pem_of(pem: str) -> str:
    """The RSA public key in ``pem``, which may hold the public key or the private key; ValueError otherwise."""
    data = pem.encode()
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise ValueError("not a PEM-encoded RSA key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key (GitHub Apps sign with RS256)")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _repo_names(repos: Any, where: str) -> tuple[str, ...]:
    if isinstance(repos, str) or not isinstance(repos, Iterable):
        raise ValueError(f"{where}: repos must be a list of 'owner/name'")
    names = tuple(str(r) for r in repos)
    for name in names:
        owner, _, repo = name.partition("/")
        if not owner or not repo or "/" in repo:
            raise ValueError(f"{where}: {name!r} is not 'owner/name'")
    return names


@dataclass(frozen=True)
class Installation:
    id: int
    repos: tuple[str, ...]


@dataclass(frozen=True)
class AppSpec:
    app_id: int
    public_key: str = field(repr=False)  # PEM of the RSA public key that verifies the app's JWTs
    slug: str = "sentinel"
    installations: tuple[Installation, ...] = ()
    owner: str | None = None  # the login owning the app; the hub fills in its repositories' owner

    def __post_init__(self) -> None:
        if self.app_id <= 0:
            raise ValueError(f"app {self.app_id}: app_id must be a positive integer")
        if not self.slug:
            raise ValueError(f"app {self.app_id}: empty slug")
        ids = [i.id for i in self.installations]
        if len(ids) != len(set(ids)):
            raise ValueError(f"app {self.app_id}: an installation id appears twice")
        try:  # a private key is accepted, but only its public half is kept
            object.__setattr__(self, "public_key", public_pem_of(self.public_key))
        except ValueError as exc:
            raise ValueError(f"app {self.app_id}: public_key is {exc}") from None

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"

    @property
    def jwt_label(self) -> str:
        """The rate-limit and request-log label of requests signed by the app itself."""
        return f"app-{self.slug}"

    def installation_label(self, installation_id: int) -> str:
        """The label all tokens of one installation share (GitHub limits installations, not tokens)."""
        return f"app-{self.slug}-installation-{installation_id}"

    def installation(self, installation_id: int) -> Installation | None:
        return next((i for i in self.installations if i.id == installation_id), None)

    @classmethod
    def build(
        cls,
        app_id: int,
        public_key: str,
        installations: Mapping[int, Iterable[str]],
        *,
        slug: str = "sentinel",
        owner: str | None = None,
    ) -> "AppSpec":
        """An app from ``installations`` as ``{installation_id: ["owner/name", ...]}``."""
        where = f"app {app_id}"
        return cls(
            app_id=int(app_id),
            public_key=public_key,
            slug=slug,
            installations=tuple(
                Installation(int(i), _repo_names(repos, f"{where}, installation {i}"))
                for i, repos in installations.items()
            ),
            owner=owner,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, index: int = 0, base_dir: Path | None = None) -> "AppSpec":
        """An entry of the tokens file's ``apps`` list; a relative ``public_key_path`` is read from ``base_dir``."""
        where = f"tokens file app {index}"
        known = {"app_id", "slug", "public_key", "public_key_path", "installations", "owner"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        if "app_id" not in data:
            raise ValueError(f"{where}: 'app_id' is required")
        if ("public_key" in data) == ("public_key_path" in data):
            raise ValueError(f"{where}: give one of 'public_key' (PEM) and 'public_key_path'")
        pem = data.get("public_key")
        if pem is None:
            path = Path(str(data["public_key_path"]))
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                pem = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"{where}: cannot read public_key_path {str(path)!r}: {exc.strerror}") from None
        entries = data.get("installations", [])
        if not isinstance(entries, list):
            raise ValueError(f"{where}: installations must be a list")
        installations: dict[int, Iterable[str]] = {}
        for j, entry in enumerate(entries):
            unknown = set(entry) - {"id", "repos"} if isinstance(entry, dict) else set()
            if not isinstance(entry, dict) or unknown or "id" not in entry or "repos" not in entry:
                detail = f"unknown keys {sorted(unknown)}" if unknown else "needs 'id' and 'repos'"
                raise ValueError(f"{where}, installation {j}: {detail}")
            installations[int(entry["id"])] = entry["repos"]
        try:
            return cls.build(
                int(data["app_id"]),
                str(pem),
                installations,
                slug=str(data.get("slug", "sentinel")),
                owner=data.get("owner"),
            )
        except ValueError as exc:  # already names the app
            raise ValueError(f"tokens file: {exc}") from None


def granted_permissions(requested: Any) -> dict[str, str]:
    """The permissions an installation token gets: the app's, or the subset asked for (422 beyond them)."""
    if not requested:
        return dict(PERMISSIONS)
    if not isinstance(requested, dict):
        raise unprocessable(PERMISSIONS_NOT_GRANTED)
    for name, level in requested.items():
        granted = PERMISSIONS.get(name)
        if granted is None or level not in _LEVELS or _LEVELS.index(level) > _LEVELS.index(granted):
            raise unprocessable(PERMISSIONS_NOT_GRANTED)
    return {str(name): str(level) for name, level in requested.items()}


@dataclass(frozen=True)
class _Registered:
    app: AppSpec
    key: rsa.RSAPublicKey


def _app_id(issuer: Any) -> int | None:
    try:
        return int(str(issuer))
    except ValueError:
        return None


class AppRegistry:
    """The apps the hub knows; safe to change while requests are served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._apps: dict[int, _Registered] = {}

    def add(self, app: AppSpec) -> None:
        key = serialization.load_pem_public_key(app.public_key.encode())
        assert isinstance(key, rsa.RSAPublicKey)
        with self._lock:
            others = [r.app for r in self._apps.values() if r.app.app_id != app.app_id]
            if any(other.slug == app.slug for other in others):
                raise ValueError(f"two apps with the slug {app.slug!r}")
            taken = {i.id for other in others for i in other.installations}
            clash = sorted(taken & {i.id for i in app.installations})
            if clash:
                raise ValueError(f"app {app.app_id}: installation ids {clash} belong to another app")
            self._apps[app.app_id] = _Registered(app, key)

    def get(self, app_id: int) -> AppSpec | None:
        with self._lock:
            registered = self._apps.get(app_id)
        return registered.app if registered else None

    def apps(self) -> list[AppSpec]:
        with self._lock:
            return [r.app for r in self._apps.values()]

    def authenticate(self, token: str) -> AppSpec:
        """The app whose key signed ``token``, or 401 with the message GitHub gives for that JWT."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise HubError(401, JWT_UNDECODABLE) from None
        with self._lock:
            registered = self._apps.get(_app_id(unverified.get("iss")))  # type: ignore[arg-type]
        if registered is None:
            raise HubError(401, JWT_UNDECODABLE)
        try:
            # exp and iat are checked against the real time: the client signed them with it
            claims = jwt.decode(
                token, registered.key, algorithms=["RS256"], options={"require": ["exp", "iat", "iss"]}
            )
        except jwt.ExpiredSignatureError:
            raise HubError(401, JWT_EXPIRED) from None
        except jwt.MissingRequiredClaimError as exc:
            message = {"exp": JWT_EXPIRED, "iat": JWT_ISSUED_LATER}.get(exc.claim, JWT_UNDECODABLE)
            raise HubError(401, message) from None
        except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            raise HubError(401, JWT_ISSUED_LATER) from None
        except jwt.PyJWTError:  # bad signature, another algorithm (or none), malformed claims
            raise HubError(401, JWT_UNDECODABLE) from None
        if int(claims["exp"]) > time.time() + MAX_JWT_LIFETIME:
            raise HubError(401, JWT_TOO_LONG)
        return registered.app
