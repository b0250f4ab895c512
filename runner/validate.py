"""Strict patterns for every string that reaches a Dockerfile, a file name or a pip command line.

Matrix files, compatibility data, the command line and result files are all
treated as hostile: the tool runs as root on shared hosts with matrix files
copied from colleagues. Each checker returns the value or raises ValueError with
the *problem and its fix* in one sentence; callers add the file and the key (the
pydantic models in runner/matrix.py and runner/compat.py use them as validators).
"""

from __future__ import annotations

import hashlib
import math
import re
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement

# Names of frameworks, versions, toolchains, workloads, models, datasets, profiles, bases:
# they become parts of cell ids, image tags and file names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
# Option keys: bench reads them as Python identifiers; they become parts of cell ids.
OPTION_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Debian package names (policy 5.6.1), optionally pinned with =version.
APT_RE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,63}(=[A-Za-z0-9.+:~-]{1,64})?")
# Docker image references: [registry[:port]/]path[:tag][@digest], lower-case path components.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_RE = re.compile(r"(?:[A-Za-z0-9.-]+(?::[0-9]{1,5})?/)?" + _COMPONENT + r"(?:/" + _COMPONENT + r")*"
                      r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")
# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators: any of them can end a
# Dockerfile line, a log line or a terminal escape sequence.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_TEXT = 256
MAX_INT = 10 ** 15


def printable(text) -> str:
    """Text safe to print on one line: control characters shown as escapes."""
    return CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], str(text))


def check_text(value, what: str = "value", max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    bad = CONTROL_RE.search(value)
    if bad:
        raise ValueError(f"{what} contains the control character {bad.group()!r}; remove it (a newline would "
                         f"start a new Dockerfile instruction)")
    if len(value) > max_len:
        raise ValueError(f"{what} is {len(value)} characters long; at most {max_len} are allowed")
    return value


def check_name(value, what: str = "name") -> str:
    check_text(value, what)
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a plain name: use letters, digits and . _ + - only, starting "
                         f"with a letter or digit, at most 64 characters")
    return value


def check_option_key(value) -> str:
    check_text(value, "option name")
    if not OPTION_KEY_RE.fullmatch(value):
        raise ValueError(f"option name {value!r} is not an identifier: use letters, digits and _ only, starting "
                         f"with a letter or _, at most 64 characters")
    return value


def check_option_value(value):
    """bool, int, finite float or a one-line string; nothing YAML might have coerced (dates, nulls, lists)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError(f"option value {value} is out of range (at most {MAX_INT} in magnitude)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"option value {value} is not a finite number; give a number such as 0.1")
        return value
    if isinstance(value, str):
        return check_text(value, "option value")
    raise ValueError(f"option value must be a boolean, number or string, not {type(value).__name__} "
                     f"({printable(repr(value))[:60]}); quote it if a string was meant")


def check_requirement(value, what: str = "pip requirement") -> str:
    """A PEP 508 requirement by name (`requests>=2.31`, `jax[cuda12]==0.10.2`): never a pip option, a URL or a
    path, which would let a matrix install or run arbitrary code from anywhere at build time."""
    check_text(value, what, max_len=200)
    if value != value.strip() or not value:
        raise ValueError(f"{what} {value!r} is empty or has surrounding spaces; write it as `name==version`")
    if value.startswith("-"):
        raise ValueError(f"{what} {value!r} starts with `-`, which pip would read as an option; give a "
                         f"requirement such as `requests>=2.31`")
    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        raise ValueError(f"{what} {value!r} is not a pip requirement ({printable(str(exc)).splitlines()[0]}); "
                         f"write it as `name`, `name==version` or `name[extra]>=version`") from None
    if req.url:
        raise ValueError(f"{what} {value!r} installs from a URL, which is refused; publish the package to an "
                         f"index and name it with a version")
    return value


def check_apt_package(value) -> str:
    check_text(value, "apt package")
    if not APT_RE.fullmatch(value):
        raise ValueError(f"apt package {value!r} is not a Debian package name (lower-case letters, digits, "
                         f"+ . -, optionally =version)")
    return value


def check_image_ref(value) -> str:
    check_text(value, "image reference")
    if not IMAGE_RE.fullmatch(value) or len(value) > 255:
        raise ValueError(f"image reference {value!r} is not a Docker image reference such as "
                         f"`nvidia/cuda:12.5.1-runtime-ubuntu22.04`")
    return value


# Query strings, fragments and user info carry credentials; so do long random-looking path segments
# (Gemfury, Artifactory and GitLab put tokens there). A plain mirror path never needs them.
_TOKEN_PREFIXES = ("ghp_", "gho_", "github_pat_", "glpat-", "pypi-", "AKIA", "ya29.", "xox")


def _looks_like_token(segment: str) -> bool:
    if segment.startswith(_TOKEN_PREFIXES) and len(segment) >= 12:
        return True
    if len(segment) >= 20 and re.search(r"[0-9]", segment) and re.search(r"[A-Za-z]", segment):
        return True
    return len(segment) >= 32


def url_credential_problem(url: str) -> str | None:
    """Why a pip index URL may carry a credential, or None when it is a plain mirror URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return "it is not a well-formed URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it is not an http(s) URL"
    if "@" in parts.netloc or parts.username or parts.password:
        return "it has user info (user:password@)"
    if parts.query or parts.fragment:
        return "it has a query string or fragment (?token=... is a credential)"
    for segment in parts.path.split("/"):
        if _looks_like_token(segment):
            return f"its path segment {segment[:4]}... looks like a token"
    return None


def check_index_url(value, what: str = "index URL") -> str:
    check_text(value, what, max_len=500)
    if re.search(r"[\s'\"\\`$;&|<>]", value):
        raise ValueError(f"{what} {value!r} contains spaces, quotes or shell characters")
    problem = url_credential_problem(value)
    if problem:
        raise ValueError(f"{what} {value!r} is refused: {problem}; give a plain https mirror URL")
    return value


def id_value(value) -> str:
    """A variant value as a cell-id part. Injective: values that print alike (`a b`/`a_b`, true/"true",
    1/"1") get a short hash of their type and value, so two different cells never share a result file.
    Plain values keep their readable form (`NCHW`, `true`, `2`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    plain = re.fullmatch(r"[A-Za-z0-9.]+", text) is not None
    if isinstance(value, str):
        # a string that reads like a bool or number would collide with that bool or number
        plain = plain and not re.fullmatch(r"(?i)true|false|[0-9.]+|nan|inf|infinity", text)
    if plain:
        return text
    digest = hashlib.sha256(f"{type(value).__name__}:{value!r}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_.")[:24]
    return f"{readable}_{digest}" if readable else f"_{digest}"
