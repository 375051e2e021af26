"""``security``: what an attacker would try first.

* **Services** (``url``). Over HTTPS: the certificate verifies (against the target's ``ca``, else
  the system's store) and names the host, it is valid for at least ``min_days`` more days
  (default 14), the negotiated TLS version is at least ``min_tls`` (default ``1.2``) and a lower
  version is refused (when this machine's OpenSSL can still offer one). Always: the response of
  ``path`` carries the required ``headers`` (default ``X-Content-Type-Options``, plus
  ``Strict-Transport-Security`` over HTTPS) and every ``forbidden_paths`` entry (default
  ``/.git/config``, ``/.env``, ``/debug``) answers 401, 403 or 404.
* **Config files** (``files``): no plaintext secret: private key blocks, AWS access key ids,
  ``password:``/``secret:``/``token:``-style assignments of a literal value (``${env:...}``
  references and empty values are fine) and the extra regular expressions in ``patterns``.
  Each finding names ``file:line`` and what it is, never the value. No file is world-writable,
  and no file with a finding is world-readable.
* **SQLite stores**: the database file (and its journal/WAL) is not world-writable, and with
  ``private: true`` not world-readable either.
* **PostgreSQL stores**: the login role is not a superuser (``superuser: true`` allows it), and
  with ``require_ssl: true`` the connection is encrypted.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import stat
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..http import Answer, tls_context, watch
from ..yamldoc import read_text
from .base import CheckContext, CheckKind, CheckResult
from .http import get, target_ca
from .limits import REQUEST_TIMEOUT_PARAM, HttpLimits
from .stores import StoreError, open_store
from .syntax import config_files, display_path

__all__ = ["SECURITY", "scan_text"]

DEFAULT_FORBIDDEN = ["/.git/config", "/.env", "/debug"]
TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
                "1.3": ssl.TLSVersion.TLSv1_3}
_TLS_NAMES = {"TLSv1": "1.0", "TLSv1.1": "1.1", "TLSv1.2": "1.2", "TLSv1.3": "1.3"}

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": "^/", "description": "services: the path whose response "
                                                                   "headers are checked (default: health path, else /)"},
        "headers": {"type": "array", "items": {"type": "string", "minLength": 1},
                    "description": "services: response headers that must be present (default: "
                                   "X-Content-Type-Options, and Strict-Transport-Security over HTTPS)"},
        "forbidden_paths": {"type": "array", "items": {"type": "string", "pattern": "^/"},
                            "description": "services: paths that must answer 401, 403 or 404 "
                                           "(default /.git/config, /.env, /debug)"},
        "min_days": {"type": "integer", "minimum": 0,
                     "description": "HTTPS: the fewest days the certificate must still be valid (default 14)"},
        "min_tls": {"enum": sorted(TLS_VERSIONS), "description": "HTTPS: the lowest TLS version (default '1.2')"},
        "patterns": {"type": "array", "items": {"type": "string", "format": "regex"},
                     "description": "config files: extra regular expressions that count as a leaked secret"},
        "private": {"type": "boolean", "description": "SQLite: the data is not for everyone: the database "
                                                      "file must not be world-readable either (default false)"},
        "superuser": {"type": "boolean", "description": "PostgreSQL: allow a superuser login (default false)"},
        "require_ssl": {"type": "boolean", "description": "PostgreSQL: the connection must be encrypted "
                                                          "(default false)"},
        "request_timeout": {**REQUEST_TIMEOUT_PARAM, "description": "services: the longest one request (or TLS "
                                                                    "handshake) may take (default: the target's, else 10s)"},
        "name": {"type": "string", "description": "names the item (security-NAME[target])"},
    },
}

# -- secrets in text ----------------------------------------------------------------------------

_PRIVATE_KEY = re.compile(r"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----")
_AWS_KEY = re.compile(r"\b((?:AKIA|ASIA)[0-9A-Z]{16})\b")
_SECRET_KEY = (r"(?:password|passwd|pwd|secret|token|api[_-]?key|secret[_-]?key|access[_-]?key"
               r"|private[_-]?key|auth[_-]?token|client[_-]?secret|credentials?)")
# ``key: value`` / ``key = value`` at the start of a line or inside a flow mapping or JSON object;
# the value runs to the end of the line, or to the next ``,`` or ``}`` when it is not quoted.
_ASSIGNMENT = re.compile(
    r"""(?:^\s*(?:export\s+|-\s+)?|[{,]\s*)["']?(?P<key>(?:[A-Za-z0-9_.-]*[_.-])?""" + _SECRET_KEY +
    r""")["']?\s*(?::|=)[ \t]*(?P<value>"[^"]*"|'[^']*'|[^,}\s][^,}]*?)?\s*(?=[,}]|$)""", re.IGNORECASE)
_REFERENCE = re.compile(r"^\$\{[^}]*\}$|^\$[A-Za-z_][A-Za-z0-9_]*$|^%\([^)]*\)s$|^\{\{.*\}\}$")
_EMPTY = {"", "null", "~", "none", "''", '""', "[]", "{}", "<redacted>", "***", "changeme-in-env"}


def _literal(value: str) -> str | None:
    """The literal secret an assignment's right-hand side holds, or ``None`` when it holds none."""
    value = value.strip()
    if " #" in value:
        value = value.split(" #", 1)[0].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if value.lower() in _EMPTY or value.startswith(("{", "[", "&", "*", "|", ">")) and len(value) <= 1:
        return None
    if value.startswith(("{", "[")):
        return None  # a nested mapping or list: its own lines are scanned
    if _REFERENCE.match(value) or "${env:" in value:
        return None
    if value.lower() in ("true", "false", "yes", "no", "on", "off"):
        return None
    return value


def mask(secret: str) -> str:
    """Never the secret itself: at most its first 4 characters when it is long, and its length."""
    shown = secret[:4] if len(secret) >= 16 else ""
    return f"{shown}{'*' * 8} ({len(secret)} chars)"


def scan_text(text: str, patterns: list[re.Pattern[str]] = ()) -> list[tuple[int, str]]:  # type: ignore[assignment]
    """``[(line, what)]`` for every plaintext secret in ``text``; ``what`` never holds the secret."""
    findings: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _PRIVATE_KEY.search(line)
        if match:
            findings.append((number, f"private key block ({match.group(1)})"))
            continue
        match = _AWS_KEY.search(line)
        if match:
            findings.append((number, f"AWS access key id {match.group(1)[:4]}{'*' * 16}"))
            continue
        stripped = line.lstrip()
        secret = None
        if not stripped.startswith(("#", ";", "//")):
            for match in _ASSIGNMENT.finditer(line):
                secret = _literal(match.group("value") or "")
                if secret is not None:
                    findings.append((number, f"{match.group('key')} = {mask(secret)}: a literal secret "
                                             "(use ${env:NAME} or a secret store)"))
                    break
        if secret is not None:
            continue
        for pattern in patterns:
            found = pattern.search(line)
            if found:
                findings.append((number, f"matches pattern {pattern.pattern!r} ({mask(found.group(0))})"))
                break
    return findings


def _mode_problems(path: Path, display: str, private: str | None) -> list[str]:
    """World-writable is always a problem; world-readable when the file is ``private`` (why)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return [f"{display}: cannot stat: {exc.strerror or exc}"]
    problems = []
    if mode & stat.S_IWOTH:
        problems.append(f"{display}: world-writable (mode {stat.filemode(mode)}, {oct(mode & 0o777)})")
    if private and mode & stat.S_IROTH:
        problems.append(f"{display}: world-readable (mode {stat.filemode(mode)}, {oct(mode & 0o777)}) "
                        f"and {private}")
    return problems


def _config(ctx: CheckContext) -> CheckResult:
    files = config_files(ctx)
    assert ctx.target is not None
    expected = {"findings": 0, "permission_problems": 0}
    if not files:
        return CheckResult(False, f"no config file matches {', '.join(ctx.target.spec['files'])}", {"files": 0},
                           {"files": ">= 1"})
    patterns = [re.compile(p) for p in ctx.params.get("patterns") or []]
    findings: list[str] = []
    permissions: list[str] = []
    for path in files:
        display = display_path(ctx, path)
        if ctx.remaining() <= 0:
            findings.append(f"stopped before {display}: {ctx.budget_text()} ran out")
            break
        text, _ = read_text(path, display)
        found = scan_text(text, patterns) if text is not None else []
        findings.extend(f"{display}:{line}: {what}" for line, what in found)
        permissions.extend(_mode_problems(path, display, "holds a secret" if found else None))
    measured = {"files": len(files), "findings": len(findings), "permission_problems": len(permissions)}
    problems = findings + permissions
    if problems:
        return CheckResult(False, f"{len(problems)} problem(s) in {len(files)} config file(s): {problems[0]}",
                           measured, expected, problems)
    return CheckResult(True, f"{len(files)} config file(s): no plaintext secret, no unsafe permission",
                       measured, expected)


def _sqlite(ctx: CheckContext, value: str) -> CheckResult:
    path = ctx.path(value)
    private = bool(ctx.params.get("private", False))
    expected = {"world_writable": 0, **({"world_readable": 0} if private else {})}
    if not path.is_file():
        return CheckResult(False, f"SQLite database {value} does not exist", {"exists": False}, expected)
    problems: list[str] = []
    modes = {}
    for suffix in ("", "-journal", "-wal", "-shm"):
        candidate = Path(f"{path}{suffix}")
        if candidate.exists():
            mode = candidate.stat().st_mode
            modes[f"mode{suffix}"] = oct(mode & 0o777)
            problems.extend(_mode_problems(candidate, f"{value}{suffix}", "is private" if private else None))
    measured = {**modes, "world_writable": sum("world-writable" in p for p in problems)}
    if private:
        measured["world_readable"] = sum("world-readable" in p for p in problems)
    if problems:
        return CheckResult(False, f"{len(problems)} problem(s): {problems[0]}", measured, expected, problems)
    return CheckResult(True, f"{value}: not world-writable{' or -readable' if private else ''} "
                             f"(mode {modes['mode']})", measured, expected)


def _postgres(ctx: CheckContext, spec: Mapping[str, Any]) -> CheckResult:
    allow_super = bool(ctx.params.get("superuser", False))
    require_ssl = bool(ctx.params.get("require_ssl", False))
    expected: dict[str, Any] = {}
    if not allow_super:
        expected["superuser"] = False
    if require_ssl:
        expected["ssl"] = True
    try:
        store = open_store(ctx, spec)
    except StoreError as exc:
        return CheckResult(False, str(exc), {"connected": False}, expected)
    with store:
        try:
            role, is_super = store.query("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")[0]
            ssl_rows = store.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        except StoreError as exc:
            return CheckResult(False, f"{store.label}: {exc}", {}, expected)
    encrypted = bool(ssl_rows and ssl_rows[0][0])
    measured = {"role": role, "superuser": bool(is_super), "ssl": encrypted}
    problems = []
    if is_super and not allow_super:
        problems.append(f"the login role {role!r} is a superuser (give the release a role with the rights it needs)")
    if require_ssl and not encrypted:
        problems.append("the connection is not encrypted (sslmode)")
    if problems:
        return CheckResult(False, f"{store.label}: {'; '.join(problems)}", measured, expected)
    return CheckResult(True, f"{store.label}: role {role!r} is not a superuser" if not is_super
                       else f"{store.label}: role {role!r} (superuser allowed)", measured, expected)


# -- services -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _bounded(host: str, port: int, timeout: float) -> Iterator[socket.socket]:
    """A connection that is shut down ``timeout`` seconds from now, whatever is under way on it
    (a handshake dripped a byte at a time would otherwise go on past every socket timeout)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as raw:
        guard = watch(deadline, raw)
        try:
            yield raw
        finally:
            guard.finish()


def _tls(ctx: CheckContext, url: str, problems: list[str], measured: dict[str, Any]) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    min_days = int(ctx.params.get("min_days", 14))
    min_tls = str(ctx.params.get("min_tls", "1.2"))
    ca = target_ca(ctx)
    context = tls_context(ca)
    remaining = ctx.remaining()
    if remaining <= 0:
        problems.append(f"TLS not checked: {ctx.budget_text()} was used up")
        return
    limits = HttpLimits.of(ctx)
    try:
        with _bounded(host, port, min(remaining, limits.request_timeout)) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            version = tls.version() or ""
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        measured["certificate"] = exc.verify_message
        problems.append(f"certificate of {host}:{port} does not verify: {exc.verify_message}"
                        + (" (verified against the target's ca)" if ca else " (verified against the system store)"))
        return
    except (OSError, ssl.SSLError) as exc:
        measured["certificate"] = "no handshake"
        problems.append(f"TLS handshake with {host}:{port} failed: {getattr(exc, 'reason', None) or exc}")
        return
    measured["certificate"] = "valid"
    measured["tls"] = version
    expiry = cert.get("notAfter")
    not_after = ssl.cert_time_to_seconds(expiry) if isinstance(expiry, str) else None
    if not_after is not None:
        days = (not_after - time.time()) / 86400
        measured["days_left"] = round(days, 1)
        if days < min_days:
            problems.append(f"certificate expires in {days:.1f} days < {min_days} days ({cert['notAfter']})")
    negotiated = _TLS_NAMES.get(version)
    if negotiated is None or TLS_VERSIONS[negotiated] < TLS_VERSIONS[min_tls]:
        problems.append(f"negotiated {version or 'no TLS version'} < TLS {min_tls}")
    # Does the server refuse the version below the minimum? Only testable when OpenSSL here offers it.
    lower = [v for k, v in TLS_VERSIONS.items() if TLS_VERSIONS[k] < TLS_VERSIONS[min_tls]]
    if not lower:
        measured["lower_tls_refused"] = "n/a"
        return
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: that is why we probe them
            warnings.simplefilter("ignore", DeprecationWarning)
            probe.set_ciphers("DEFAULT:@SECLEVEL=0")
            probe.minimum_version = lower[0]
            probe.maximum_version = lower[-1]
    except (ValueError, ssl.SSLError):
        measured["lower_tls_refused"] = "untested"
        return
    remaining = ctx.remaining()
    if remaining <= 0:
        measured["lower_tls_refused"] = "untested"
        return
    try:
        with _bounded(host, port, min(remaining, limits.request_timeout)) as raw, \
                probe.wrap_socket(raw, server_hostname=host) as tls:
            accepted = tls.version()
    except ssl.SSLError as exc:
        reason = str(getattr(exc, "reason", "") or "")
        if "NO_PROTOCOLS_AVAILABLE" in reason or "NO_SUPPORTED_VERSIONS" in reason:
            measured["lower_tls_refused"] = "untested"  # this machine's OpenSSL cannot offer it
        else:
            measured["lower_tls_refused"] = True
        return
    except OSError:
        measured["lower_tls_refused"] = True
        return
    measured["lower_tls_refused"] = False
    problems.append(f"the server accepts {accepted}, below TLS {min_tls}")


def _service(ctx: CheckContext) -> CheckResult:
    target = ctx.target
    assert target is not None
    params = ctx.params
    base = target.spec["url"].rstrip("/")
    https = base.startswith("https:")
    path = params.get("path") or target.spec.get("health") or "/"
    default_headers = ["X-Content-Type-Options"] + (["Strict-Transport-Security"] if https else [])
    headers = list(params.get("headers", default_headers))
    forbidden = list(params.get("forbidden_paths", DEFAULT_FORBIDDEN))
    expected: dict[str, Any] = {"headers": headers, "forbidden_paths": "401/403/404"}
    measured: dict[str, Any] = {}
    problems: list[str] = []
    details: list[str] = []
    if https:
        expected.update({"certificate": "valid", "min_days": int(params.get("min_days", 14)),
                         "min_tls": str(params.get("min_tls", "1.2"))})
        _tls(ctx, base, problems, measured)
    limits = HttpLimits.of(ctx)

    def fetch(p: str) -> Answer:  # status and headers only: no body is read
        return get(ctx, base + p, limits=limits, read_body=False)

    if headers:
        answer = fetch(path)
        if not answer.ok:
            problems.append(f"GET {path} {answer.error}")
            measured[f"GET {path}"] = answer.kind
        else:
            missing = [h for h in headers if h not in answer.headers]
            present = [h for h in headers if h in answer.headers]
            measured["missing_headers"] = missing
            measured["present_headers"] = present
            # as text too: the terminal's measured line shows figures and text, not lists
            measured["headers"] = (f"{len(present)} of {len(headers)} present"
                                   + (f" ({', '.join(present)})" if present else "")
                                   + (f", missing {', '.join(missing)}" if missing else ""))
            if missing:
                problems.append(f"GET {path} lacks header(s) {', '.join(missing)}"
                                + (f" (present: {', '.join(present)})" if present else ""))
    exposed: list[str] = []
    unjudged: list[str] = []
    for p in forbidden:
        answer = fetch(p)
        if not answer.ok:
            measured[f"GET {p}"] = answer.kind
            unjudged.append(p)
            problems.append(f"GET {p} {answer.error}: not a verdict on exposure")
            continue
        status = answer.status
        measured[f"GET {p}"] = status
        details.append(f"GET {p}: {status}")
        if status in (401, 403, 404):
            continue
        if status is not None and status >= 500:
            unjudged.append(p)
            problems.append(f"GET {p} answered {status}: the service failed, not a verdict on exposure")
        else:
            exposed.append(p)
            problems.append(f"GET {p} answered {status}, expected 401, 403 or 404 (exposed)")
    measured["exposed_paths"] = exposed
    measured["unjudged_paths"] = unjudged
    if problems:
        return CheckResult(False, f"{base}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1
                                                                else ""), measured, expected, problems + details)
    parts = []
    if https:
        parts.append(f"certificate valid for {measured.get('days_left')} days, {measured.get('tls')}")
    if headers:
        parts.append(f"headers {', '.join(headers)} present")
    if forbidden:
        parts.append(f"{len(forbidden)} forbidden path(s) closed")
    return CheckResult(True, f"{base}: {'; '.join(parts) or 'nothing to check'}", measured, expected, details)


def run(ctx: CheckContext) -> CheckResult:
    target = ctx.target
    assert target is not None
    spec = target.spec
    if "url" in spec:
        return _service(ctx)
    if "files" in spec:
        return _config(ctx)
    if "sqlite" in spec:
        return _sqlite(ctx, spec["sqlite"])
    return _postgres(ctx, spec)


def param_problem(params: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """A pattern that is not a regular expression is a plan error, not a traceback."""
    for pattern in params.get("patterns") or []:
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as exc:
                return f"patterns: {pattern!r} is not a regular expression: {exc}"
    return None


SECURITY = CheckKind(
    name="security",
    judges=frozenset({"service", "config", "datastore"}),
    judges_target=lambda target: "tcp" not in target.spec,
    params=PARAMS,
    run=run,
    param_problem=param_problem,
    description="TLS certificate and version, security headers, exposed paths; plaintext secrets and "
                "file permissions of config files and SQLite stores; PostgreSQL superuser login",
)
