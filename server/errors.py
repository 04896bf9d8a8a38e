"""The server's own exceptions and the one map from them to gRPC status codes.

`ServerError` is the root of every error the server raises on purpose; a process's entry point
(the CLI) reports any of them as one line. Below it:
- `ClosedLoopError`: expected failures of an RPC (bad input, missing things, conflicts, an
  unreachable database), raised anywhere in the server and turned into a status by the interceptor
  in `api/interceptors.py` (driver errors nobody handled are translated first, by
  `db.pool.database_error`). Anything else an RPC raises is a bug: logged once, answered INTERNAL.
- `ConfigError`, `StartupError` and `db.migrations.MigrationError`: a process that cannot start.
The DSL keeps its own root (closedloop.dsl.RuleCompileError): it is a library of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: `field` is a path like `alert.metrics["x"]`."""

    field: str
    description: str


class ServerError(Exception):
    """Root of the server's own errors (see the module docstring)."""


class ClosedLoopError(ServerError):
    """Root of every expected RPC error; `code` is the gRPC status it maps to."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ClosedLoopError):
    """Bad input; carries the field violations for google.rpc.BadRequest."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation] | FieldViolation, message: str | None = None) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or summary)


class RuleSetInvalid(InvalidArgument):
    """Rules that do not compile; the diagnostics travel in the status details."""

    def __init__(self, diagnostics: list, rendered: str) -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.severity == "error"]
        violations = [
            FieldViolation("source", f"{d.filename}:{d.line}:{d.column}: {d.message}") for d in errors
        ]
        super().__init__(violations, f"rules do not compile ({len(errors)} error(s)):\n{rendered}")


class NotFound(ClosedLoopError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ClosedLoopError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ClosedLoopError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ClosedLoopError):
    """The database (or another dependency) cannot be reached right now; clients may retry."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(ClosedLoopError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ClosedLoopError):
    code = grpc.StatusCode.PERMISSION_DENIED


class InternalError(ClosedLoopError):
    """A bug already logged where it happened (e.g. a failed alert batch), answered INTERNAL once
    per waiting request without logging it again."""

    code = grpc.StatusCode.INTERNAL


class ConfigError(ServerError):
    """Bad configuration at start-up; the CLI prints it as one line and exits 2."""


class StartupError(ServerError):
    """The server cannot start (e.g. the database stays unreachable); printed as one line."""


def to_status(exc: ClosedLoopError) -> tuple[grpc.StatusCode, str, "object | None"]:
    """(code, message, google.rpc.Status or None) for an expected error."""
    from google.protobuf import any_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    details = None
    if isinstance(exc, InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message=exc.message[:4000], details=[packed]
        )
    return exc.code, exc.message, details
