"""No secret is committed: every file git tracks is scanned for credentials.

The patterns are the high-precision ones (a key format, or a secret-named setting holding a
literal value in a config file); the scanner is tested on planted examples so it can fail.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import REPO_ROOT

# Formats that are secrets wherever they appear.
KEY_FORMATS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:[^\s/@'\"$]{6,}@"),
}
# In config files (env, YAML, INI, TOML): a secret-named key set to a literal, not a reference.
CONFIG_SUFFIXES = {".env", ".yaml", ".yml", ".ini", ".toml", ".cfg", ".example"}
SECRET_SETTING = re.compile(
    r"^\s*-?\s*(?P<key>[\w.-]*(?:PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY)[\w.-]*)\s*[:=]\s*(?P<value>\S.*?)\s*(?:#.*)?$",
    re.IGNORECASE,
)
# Keys that name a secret kept elsewhere (an id, a Kubernetes Secret's name, a file).
NAMES_A_SECRET = re.compile(r"(?:_ID|existingSecret|_NAME|_FILE|_PATH|_ENV)$", re.IGNORECASE)
# Values that say "no secret here": empty, a ${VAR} reference (also quoted or $$-escaped), a null.
NOT_A_SECRET = re.compile(r"""^(?:["']{2}|["']?\$+\{[^}]+\}.*|null|none|~|<[^>]+>)$""", re.IGNORECASE)
# A fake secret planted on purpose (a test of the rejection) carries this on its line.
ALLOWED = "pragma: allowlist secret"
# Files whose planted fake secrets are the point: the secret checks of the compose file.
SCANNER_TESTS = {"tests/unit/test_compose.py"}


def secrets_in(path: str, text: str) -> list[str]:
    """Each suspected secret in one file, as 'path:line: kind'."""
    found = []
    config_file = Path(path).suffix in CONFIG_SUFFIXES or Path(path).name.startswith(".env")
    for number, line in enumerate(text.splitlines(), start=1):
        if ALLOWED in line:
            continue
        found += [f"{path}:{number}: {kind}" for kind, pattern in KEY_FORMATS.items() if pattern.search(line)]
        match = SECRET_SETTING.match(line) if config_file else None
        if match and not NAMES_A_SECRET.search(match["key"]) and not NOT_A_SECRET.match(match["value"]):
            found.append(f"{path}:{number}: literal value for a secret setting")
    return found


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [name for name in listed.split("\0") if name]


def test_the_scanner_finds_planted_secrets() -> None:
    assert secrets_in("x.py", "key = 'AKIA" + "ABCDEFGHIJKLMNOP'") == ["x.py:1: AWS access key id"]
    assert secrets_in("x.py", "-----BEGIN RSA " + "PRIVATE KEY-----")
    assert secrets_in("x.py", "url = 'postgresql://mlflow:hunter" + "2hunter2@db:5432/mlflow'")
    assert secrets_in(".env", "POSTGRES_PASSWORD=hunter2")
    assert secrets_in("mlops.yaml", "  secret_key: abcdef  # set me")
    # References, empty values and secret-free URLs are not secrets.
    assert secrets_in(".env.example", "POSTGRES_PASSWORD=") == []
    assert secrets_in("docker-compose.yml", "  PASSWORD: ${POSTGRES_PASSWORD:?set it}") == []
    assert secrets_in("x.yaml", "  password: null") == []
    assert secrets_in("x.py", "url = 'postgresql://postgres@127.0.0.1:5432'") == []
    assert secrets_in("x.py", "password = os.environ['PGPASSWORD']") == []  # code, not config
    assert secrets_in(".env.example", "S3_ACCESS_KEY_ID=mlops-app") == []  # an id, not a secret
    assert secrets_in("values.yaml", "  existingSecret: prefect-auth") == []  # names one
    assert secrets_in("c.yml", '  - PGPASSWORD="$${POSTGRES_PASSWORD}" psql -h db') == []
    assert secrets_in("x.py", "'postgresql://u:hunter2" + "hunter2@db'  # " + ALLOWED) == []


def test_no_tracked_file_holds_a_secret() -> None:
    files = tracked_files()
    assert "mlops.yaml" in files and not any(Path(f).name == ".env" for f in files)
    found: list[str] = []
    for name in files:
        if name in SCANNER_TESTS:
            continue
        try:
            text = (REPO_ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary (plots) or deleted in the working tree
        found += secrets_in(name, text)
    assert found == [], "committed secrets:\n" + "\n".join(found)
