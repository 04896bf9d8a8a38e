"""Bearer-token authentication: roles say which RPCs a token may call, model scopes which models.

Roles: ingest (create alerts), read, operator (rules, models, jobs; implies read).
Scopes: glob patterns on model_id (`fx-*`, `eq-?-desk`); a token without scopes reaches every model.
A scoped token is checked on every RPC that names a model (the handlers call `require_model`, or
pass `model_scopes()` to the store so listings only return its models), and may not call the
global RPCs (applying or backtesting rule sets, reading the audit trail).

Tokens are never stored in clear: the tokens file holds one token per line,

    sha256-hex  role[,role]  name  [models=glob[,glob...]]

and a presented token is hashed and compared in constant time. Lines without the fourth field are
unscoped, so files written before scopes existed mean what they meant. Generate a line with
`closedloop token ROLE NAME [--models GLOB,...]`.

The interceptor (interceptors.py) identifies the caller once per RPC and binds it to a context
variable; the handlers read it through the functions at the end of this module.
"""

from __future__ import annotations

import contextvars
import fnmatch
import hashlib
import hmac
import pathlib
import re
import secrets
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError, PermissionDenied, Unauthenticated

ROLES = ("ingest", "read", "operator")
# Only `*` and `?`: the same patterns then mean the same thing to fnmatch here and to SQL LIKE in
# the store (store/models.py like_patterns), so a listing and a single lookup never disagree.
SCOPE_PATTERN = re.compile(r"^[A-Za-z0-9_.:/*?-]{1,128}$")

_SERVICE = "/closedloop.v1."
# The role each RPC needs; operator implies read; anything not listed needs operator.
METHOD_ROLES = {
    f"{_SERVICE}AlertService/CreateAlert": "ingest",
    f"{_SERVICE}AlertService/StreamAlerts": "ingest",
    f"{_SERVICE}AlertService/BatchCreateAlerts": "ingest",
    f"{_SERVICE}AlertService/GetAlert": "read",
    f"{_SERVICE}AlertService/ListAlerts": "read",
    f"{_SERVICE}RuleService/ValidateRules": "read",
    f"{_SERVICE}RuleService/GetRuleSet": "read",
    f"{_SERVICE}RuleService/EvaluateRules": "read",
    f"{_SERVICE}RuleService/BacktestRules": "read",
    f"{_SERVICE}RetrainService/GetModel": "read",
    f"{_SERVICE}RetrainService/ListModels": "read",
    f"{_SERVICE}RetrainService/ListModelVersions": "read",
    f"{_SERVICE}RetrainService/GetJob": "read",
    f"{_SERVICE}RetrainService/ListJobs": "read",
    f"{_SERVICE}RetrainService/WatchJob": "read",
    f"{_SERVICE}RetrainService/GetFeedbackReport": "read",
    "/closedloop.http/Metrics": "read",  # the HTTP side's /metrics (http/server.py)
    f"{_SERVICE}MonitorService/LogObservations": "ingest",
    f"{_SERVICE}MonitorService/LogOutcomes": "ingest",
    f"{_SERVICE}MonitorService/GetDriftReport": "read",
    f"{_SERVICE}MonitorService/ListDriftWindows": "read",
}
# RPCs that act on or reveal every model at once: an unscoped token only. (Rule sets are global;
# a backtest replays every model's alerts; the audit trail names every model.)
GLOBAL_METHODS = frozenset({
    f"{_SERVICE}RuleService/ApplyRules",
    f"{_SERVICE}RuleService/BacktestRules",
    f"{_SERVICE}RetrainService/ListAuditRecords",
})


@dataclass(frozen=True)
class Token:
    digest: bytes
    roles: frozenset[str]
    name: str
    scopes: tuple[str, ...] | None = None  # model_id globs; None: every model

    def allows(self, model_id: str) -> bool:
        return self.scopes is None or any(fnmatch.fnmatchcase(model_id, p) for p in self.scopes)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(patterns: Sequence[str]) -> list[str]:
    """Problems with model scope patterns (empty when all are usable)."""
    if not patterns:
        return ["models= needs at least one pattern"]
    return [f"model scope {p!r}: use 1-128 characters of [A-Za-z0-9_.:/-] and the wildcards * and ?"
            for p in patterns if not SCOPE_PATTERN.match(p)]


def new_token_line(roles: str, name: str, models: Sequence[str] = ()) -> tuple[str, str]:
    """(token to give the client, line for the tokens file); `models`: scope globs, empty for all.

    The token starts with `cl_`: a bare urlsafe token starts with '-' one time in 64, and
    `closedloop ... --token -x...` then reads as an option, not the token's value (a CLI user's
    error, and a test that failed now and then); the prefix also lets secret scanners spot it."""
    token = "cl_" + secrets.token_urlsafe(32)
    line = f"{hash_token(token)} {roles} {name}"
    if models:
        line += " models=" + ",".join(models)
    return token, line


def _parse_scopes(field: str, where: str) -> tuple[str, ...]:
    if not field.startswith("models="):
        raise ConfigError(f"{where}: the fourth field must be models=GLOB[,GLOB...]")
    patterns = [p for p in field[len("models="):].split(",") if p]
    problems = check_scopes(patterns)
    if problems:
        raise ConfigError(f"{where}: {problems[0]}")
    return tuple(patterns)


def load_tokens(path: pathlib.Path) -> list[Token]:
    tokens = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--auth-tokens {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{path}:{number}"
        if len(parts) not in (3, 4) or len(parts[0]) != 64:
            raise ConfigError(f"{where}: expected 'sha256-hex roles name [models=GLOB,...]'")
        roles = frozenset(parts[1].split(","))
        unknown = roles - set(ROLES)
        if unknown:
            raise ConfigError(f"{where}: unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
        scopes = _parse_scopes(parts[3], where) if len(parts) == 4 else None
        tokens.append(Token(bytes.fromhex(parts[0]), roles, parts[2], scopes))
    if not tokens:
        raise ConfigError(f"--auth-tokens {path}: no tokens in the file")
    return tokens


class Authenticator:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    def identify(self, authorization: str | None) -> Token:
        """The token presented in the `authorization` metadata; Unauthenticated otherwise."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthenticated("missing bearer token (metadata 'authorization: Bearer <token>')")
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        match = None
        for t in self.tokens:  # no early exit: the time taken does not tell which token matched
            if hmac.compare_digest(t.digest, digest):
                match = t
        if match is None:
            raise Unauthenticated("unknown token")
        return match

    @staticmethod
    def authorize(token: Token, method: str) -> None:
        """PermissionDenied unless the token's roles (and scopes) allow the method."""
        rpc = method.rsplit("/", 1)[-1]
        needed = METHOD_ROLES.get(method, "operator")
        allowed = token.roles | ({"read"} if "operator" in token.roles else set())
        if needed not in allowed:
            raise PermissionDenied(f"token {token.name!r} lacks role {needed!r} for {rpc}")
        if token.scopes is not None and method in GLOBAL_METHODS:
            raise PermissionDenied(f"token {token.name!r} is scoped to models {','.join(token.scopes)}; "
                                   f"{rpc} spans every model and needs an unscoped token")


# --- the caller of the current RPC -----------------------------------------------------------------
# Set by the interceptor for each RPC; None when auth is off (loopback only), which is unscoped.
_caller: contextvars.ContextVar[Token | None] = contextvars.ContextVar("closedloop_caller", default=None)
ANONYMOUS = "anonymous"  # the name audit records carry when auth is off


def bind_caller(token: Token | None) -> None:
    _caller.set(token)


def caller_name() -> str:
    token = _caller.get()
    return token.name if token is not None else ANONYMOUS


def model_scopes() -> tuple[str, ...] | None:
    """The current caller's model globs for store queries; None: every model."""
    token = _caller.get()
    return token.scopes if token is not None else None


def may_see(model_id: str) -> bool:
    token = _caller.get()
    return token is None or token.allows(model_id)


def require_model(model_id: str, field: str = "model_id") -> None:
    """PermissionDenied when the caller's scopes exclude a model it named itself.

    Checked before any lookup, so the answer says nothing about whether the model exists.
    """
    token = _caller.get()
    if token is not None and not token.allows(model_id):
        raise PermissionDenied(f"token {token.name!r} may not act on model {model_id!r} ({field}); "
                               f"its scopes are {','.join(token.scopes)}")
