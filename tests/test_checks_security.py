"""security against real things: HTTPS servers with good, expired and wrong-host certificates made
here, an HTTP server missing headers and exposing paths, config files leaking secrets, file modes,
and a real PostgreSQL login."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import HERE, run_check

# -- certificates and HTTPS servers ---------------------------------------------------------------


def _pki(base: Path) -> dict[str, Path]:
    """A CA and server certificates for 127.0.0.1: good, expired, expiring in 5 days, for another host."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pytest-release test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=400)).not_valid_after(now + datetime.timedelta(days=400))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    (base / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(name: str, sans: list[x509.GeneralName], start: datetime.datetime, end: datetime.datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        (base / f"{name}.pem").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))

    local = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    day = datetime.timedelta(days=1)
    issue("good", local, now - day, now + 200 * day)
    issue("expired", local, now - 60 * day, now - 2 * day)
    issue("soon", local, now - day, now + 5 * day)
    issue("wronghost", [x509.DNSName("shop.example.com")], now - day, now + 200 * day)
    return {n: base / f"{n}.pem" for n in ("ca", "good", "expired", "soon", "wronghost")}


@pytest.fixture(scope="module")
def https_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    base = tmp_path_factory.mktemp("pki")
    pki = _pki(base)
    procs, urls = [], {}
    for name in ("good", "expired", "soon", "wronghost"):
        proc = subprocess.Popen([sys.executable, str(HERE / "servers.py"), "https", str(pki[name]), str(pki[name])],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        urls[name] = f"https://127.0.0.1:{int(proc.stdout.readline())}"
        procs.append(proc)
    yield urls, pki["ca"]
    for proc in procs:
        proc.kill()
        proc.wait()


def test_security_https_passes_with_a_valid_certificate(https_urls: tuple[dict[str, str], Path],
                                                        tmp_path: Path) -> None:
    urls, ca = https_urls
    result = run_check("security", {"url": urls["good"], "ca": str(ca)}, tmp_path)
    assert result.passed, result.details
    assert result.measured["certificate"] == "valid"
    assert result.measured["tls"] in ("TLSv1.2", "TLSv1.3")
    assert result.measured["days_left"] > 190
    assert result.measured["lower_tls_refused"] in (True, "untested")
    assert "Strict-Transport-Security" in result.summary


def test_security_https_fails_on_an_untrusted_expired_or_wrong_host_certificate(
        https_urls: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    urls, ca = https_urls
    untrusted = run_check("security", {"url": urls["good"]}, tmp_path)
    assert not untrusted.passed
    assert "does not verify" in untrusted.summary and "system store" in untrusted.summary
    expired = run_check("security", {"url": urls["expired"], "ca": str(ca)}, tmp_path)
    assert not expired.passed
    assert "certificate has expired" in expired.summary, expired.summary
    wrong = run_check("security", {"url": urls["wronghost"], "ca": str(ca)}, tmp_path)
    assert not wrong.passed
    assert "mismatch" in wrong.summary.lower() and "127.0.0.1" in wrong.summary, wrong.summary


def test_security_https_certificate_expiring_within_min_days(https_urls: tuple[dict[str, str], Path],
                                                            tmp_path: Path) -> None:
    urls, ca = https_urls
    result = run_check("security", {"url": urls["soon"], "ca": str(ca)}, tmp_path)
    assert not result.passed
    assert "certificate expires in 4.9 days < 14 days" in result.summary or \
           "certificate expires in 5.0 days < 14 days" in result.summary, result.summary
    assert run_check("security", {"url": urls["soon"], "ca": str(ca)}, tmp_path, min_days=3).passed


def test_security_https_min_tls_13(https_urls: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    urls, ca = https_urls
    result = run_check("security", {"url": urls["good"], "ca": str(ca)}, tmp_path, min_tls="1.3")
    # Python's server speaks TLS 1.3 and also accepts 1.2: a 1.3 minimum is not met.
    assert not result.passed
    assert "the server accepts TLSv1.2, below TLS 1.3" in result.details


# -- HTTP headers and exposed paths ----------------------------------------------------------------


def test_security_http_headers_and_forbidden_paths_pass(http_url: str, tmp_path: Path) -> None:
    result = run_check("security", {"url": http_url, "health": "/healthz"}, tmp_path)
    assert result.passed, result.details
    assert result.measured == {"missing_headers": [], "present_headers": ["X-Content-Type-Options"],
                               "headers": "1 of 1 present (X-Content-Type-Options)", "exposed_paths": [],
                               "unjudged_paths": [], "GET /.git/config": 404, "GET /.env": 404, "GET /debug": 404}
    assert "GET /.git/config: 404" in result.details


def test_security_missing_header_and_exposed_paths_fail(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{server_factory('insecure')}"
    result = run_check("security", {"url": url}, tmp_path, path="/healthz")
    assert not result.passed
    assert result.summary == f"{url}: GET /healthz lacks header(s) X-Content-Type-Options (+2 more)"
    assert result.measured["exposed_paths"] == ["/.git/config", "/.env"]
    assert "GET /.git/config answered 200, expected 401, 403 or 404 (exposed)" in result.details
    only_paths = run_check("security", {"url": url}, tmp_path, headers=[], forbidden_paths=["/debug"])
    assert only_paths.passed, only_paths.details


def test_security_required_header_list(http_url: str, tmp_path: Path) -> None:
    result = run_check("security", {"url": http_url}, tmp_path, headers=["X-Content-Type-Options",
                                                                          "Content-Security-Policy"])
    assert not result.passed and "lacks header(s) Content-Security-Policy" in result.summary


# -- secrets in config files -----------------------------------------------------------------------

AWS = "AKIA" + "IOSFODNN7EXAMPLE"
PASSWORD = "hunter2-very-secret"


def _conf(base: Path, files: dict[str, str], mode: int = 0o640) -> None:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


def test_security_clean_config_passes(tmp_path: Path) -> None:
    _conf(tmp_path, {"conf/app.yaml": "db:\n  password: ${env:DB_PASSWORD}\n  token: ''\n  host: db\n"
                                      "token_ttl: 300\nsecret:\n  rotate: true\n",
                     "conf/app.ini": "[db]\npassword =\n"}, mode=0o644)
    result = run_check("security", {"files": ["conf/*"]}, tmp_path)
    assert result.passed, result.details
    assert result.measured == {"files": 2, "findings": 0, "permission_problems": 0}


def test_security_finds_leaked_secrets_without_printing_them(tmp_path: Path) -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn\n-----END RSA PRIVATE KEY-----\n"
    _conf(tmp_path, {
        "conf/app.yaml": f"service:\n  name: shop\ndb:\n  password: {PASSWORD}\naws:\n  access_key_id: {AWS}\n",
        "conf/tls.pem": key,
        "conf/app.json": '{\n  "api_token": "tok_live_abcdefghijklmnop",\n  "x": 1\n}\n',
        "conf/extra.ini": "[vendor]\nlicense = LIC-1234-5678\n",
    })
    result = run_check("security", {"files": ["conf/*"]}, tmp_path, patterns=[r"LIC-\d{4}-\d{4}"])
    assert not result.passed
    text = "\n".join([result.summary, *result.details, repr(result.measured)])
    for secret in (PASSWORD, AWS, "tok_live_abcdefghijklmnop", "MIIEowIBAAKCAQEA", "LIC-1234-5678"):
        assert secret not in text
    details = result.details
    assert any(d.startswith("conf/app.yaml:4: password = ") and "(19 chars)" in d for d in details), details
    assert "conf/app.yaml:6: AWS access key id AKIA****************" in details
    assert "conf/tls.pem:1: private key block (RSA PRIVATE KEY)" in details
    assert any(d.startswith('conf/app.json:2: "api_token"') or d.startswith("conf/app.json:2: api_token")
               for d in details), details
    assert any(d.startswith("conf/extra.ini:2: matches pattern") for d in details), details
    assert result.measured["findings"] == 5


def test_security_world_readable_secret_and_world_writable_files(tmp_path: Path) -> None:
    _conf(tmp_path, {"conf/secret.yaml": f"password: {PASSWORD}\n"}, mode=0o644)
    _conf(tmp_path, {"conf/open.yaml": "port: 8080\n"}, mode=0o666)
    _conf(tmp_path, {"conf/plain.yaml": "port: 8080\n"}, mode=0o644)
    result = run_check("security", {"files": ["conf/*.yaml"]}, tmp_path)
    assert not result.passed
    assert result.measured == {"files": 3, "findings": 1, "permission_problems": 2}
    assert "conf/secret.yaml: world-readable (mode -rw-r--r--, 0o644) and holds a secret" in result.details
    assert "conf/open.yaml: world-writable (mode -rw-rw-rw-, 0o666)" in result.details


def test_security_bad_pattern_is_a_plan_error() -> None:
    from pytest_release.checks import BUILTIN_KINDS

    problem = BUILTIN_KINDS["security"].param_problem({"patterns": ["(unclosed"]}, {"files": ["x"]})  # type: ignore[misc]
    assert problem is not None and "not a regular expression" in problem


# -- data stores -----------------------------------------------------------------------------------


def test_security_sqlite_file_mode(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "app.db"
    sqlite3.connect(db).execute("CREATE TABLE t(x)").connection.close()
    os.chmod(db, 0o640)
    ok = run_check("security", {"sqlite": "app.db"}, tmp_path)
    assert ok.passed and ok.measured == {"mode": "0o640", "world_writable": 0}
    os.chmod(db, 0o666)
    bad = run_check("security", {"sqlite": "app.db"}, tmp_path)
    assert not bad.passed and "app.db: world-writable (mode -rw-rw-rw-, 0o666)" in bad.summary
    # private: true: customer data must not be readable by every user of the machine either.
    os.chmod(db, 0o644)
    assert run_check("security", {"sqlite": "app.db"}, tmp_path).passed
    private = run_check("security", {"sqlite": "app.db"}, tmp_path, private=True)
    assert not private.passed
    assert private.summary == "1 problem(s): app.db: world-readable (mode -rw-r--r--, 0o644) and is private"
    assert private.measured == {"mode": "0o644", "world_writable": 0, "world_readable": 1}
    assert private.expected == {"world_writable": 0, "world_readable": 0}
    os.chmod(db, 0o600)
    assert run_check("security", {"sqlite": "app.db"}, tmp_path, private=True).passed


def test_security_postgres_superuser_login(pg_dsn: str, tmp_path: Path) -> None:
    import psycopg

    superuser = run_check("security", {"dsn": pg_dsn}, tmp_path)
    assert not superuser.passed
    assert "the login role 'postgres' is a superuser" in superuser.summary
    assert superuser.measured == {"role": "postgres", "superuser": True, "ssl": False}
    assert run_check("security", {"dsn": pg_dsn}, tmp_path, superuser=True).passed
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS shop_app")
        conn.execute("CREATE ROLE shop_app LOGIN PASSWORD 's3cr3t-pw'")
    app_dsn = pg_dsn.replace("postgres@", "shop_app:s3cr3t-pw@")
    app = run_check("security", {"dsn": app_dsn}, tmp_path)
    assert app.passed, app.summary
    assert "s3cr3t-pw" not in app.summary
    no_ssl = run_check("security", {"dsn": app_dsn}, tmp_path, require_ssl=True)
    assert not no_ssl.passed and "not encrypted" in no_ssl.summary
