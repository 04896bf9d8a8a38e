"""Bearer-token authentication with roles: ingest (create alerts), read, operator (rules, models, jobs).

Tokens are never stored in clear: the tokens file holds `sha256-hex role[,role] name` per line, and
a presented token is hashed and compared in constant time. Generate a line with
`closedloop token ROLE NAME`.
"""

from __future__ import annotations

import hashlib
import hmac
import pathlib
import secrets
from dataclasses import dataclass

from ..errors import ConfigError, PermissionDenied, Unauthenticated

ROLES = ("ingest", "read", "operator")

# The role each RPC needs; operator implies read; anything not listed needs operator.
METHOD_ROLES = {
    "/closedloop.v1.AlertService/CreateAlert": "ingest",
    "/closedloop.v1.AlertService/StreamAlerts": "ingest",
    "/closedloop.v1.AlertService/GetAlert": "read",
    "/closedloop.v1.AlertService/ListAlerts": "read",
    "/closedloop.v1.RuleService/ValidateRules": "read",
    "/closedloop.v1.RuleService/GetRuleSet": "read",
    "/closedloop.v1.RuleService/EvaluateRules": "read",
    "/closedloop.v1.RuleService/BacktestRules": "read",
    "/closedloop.v1.RetrainService/GetModel": "read",
    "/closedloop.v1.RetrainService/ListModels": "read",
    "/closedloop.v1.RetrainService/ListModelVersions": "read",
    "/closedloop.v1.RetrainService/GetJob": "read",
    "/closedloop.v1.RetrainService/ListJobs": "read",
    "/closedloop.v1.RetrainService/WatchJob": "read",
    "/closedloop.v1.RetrainService/GetFeedbackReport": "read",
    "/closedloop.v1.MonitorService/LogObservations": "ingest",
    "/closedloop.v1.MonitorService/LogOutcomes": "ingest",
    "/closedloop.v1.MonitorService/GetDriftReport": "read",
    "/closedloop.v1.MonitorService/ListDriftWindows": "read",
}


@dataclass(frozen=True)
class Token:
    digest: bytes
    roles: frozenset[str]
    name: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_line(roles: str, name: str) -> tuple[str, str]:
    """(token to give the client, line for the tokens file)."""
    token = secrets.token_urlsafe(32)
    return token, f"{hash_token(token)} {roles} {name}"


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
        if len(parts) != 3 or len(parts[0]) != 64:
            raise ConfigError(f"{path}:{number}: expected 'sha256-hex roles name'")
        roles = frozenset(parts[1].split(","))
        unknown = roles - set(ROLES)
        if unknown:
            raise ConfigError(f"{path}:{number}: unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
        tokens.append(Token(bytes.fromhex(parts[0]), roles, parts[2]))
    if not tokens:
        raise ConfigError(f"--auth-tokens {path}: no tokens in the file")
    return tokens


class Authenticator:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    def check(self, method: str, authorization: str | None) -> str:
        """The caller's name; Unauthenticated / PermissionDenied otherwise."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthenticated("missing bearer token (metadata 'authorization: Bearer <token>')")
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        match = None
        for t in self.tokens:
            if hmac.compare_digest(t.digest, digest):
                match = t
        if match is None:
            raise Unauthenticated("unknown token")
        needed = METHOD_ROLES.get(method, "operator")
        allowed = match.roles | ({"read"} if "operator" in match.roles else set())
        if needed not in allowed:
            raise PermissionDenied(f"token {match.name!r} lacks role {needed!r} for {method.rsplit('/', 1)[-1]}")
        return match.name
