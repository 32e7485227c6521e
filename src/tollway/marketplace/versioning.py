"""Semantic versions and version specifiers, and the rules for package names.

Versions are strict SemVer 2.0.0 (``1.4.0``, ``2.0.0-rc.1``; no leading ``v``).
A specifier is one or more clauses separated by commas or spaces, all of which must
hold:

=================  =============================================
``1.2.3``, ``==1.2.3``, ``=1.2.3``   exactly that version (a *pin*)
``>=1.2``, ``>1``, ``<2``, ``<=2.1.0``  comparisons; missing parts are 0
``!=1.3.0``        anything but that version
``^1.2.3``         compatible: ``>=1.2.3,<2.0.0`` (``^0.2.3``: ``<0.3.0``)
``~1.2.3``         patch updates: ``>=1.2.3,<1.3.0``
``1.2``, ``==1.2``  any 1.2.x
``*`` or empty     any version
=================  =============================================

Pre-releases match only a specifier that names a pre-release itself.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import semver

from tollway.errors import Unprocessable

MAX_SPEC_LENGTH = 200
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_CLAUSE = re.compile(
    r"^(==|=|!=|>=|<=|>|<|\^|~)?v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?$"
)


class InvalidVersion(Unprocessable):
    code = "invalid_version"
    title = "Invalid version"


class InvalidSpec(Unprocessable):
    code = "invalid_version_spec"
    title = "Invalid version specifier"


class InvalidPackageName(Unprocessable):
    code = "invalid_package_name"
    title = "Invalid package name"


def normalize_name(raw: str) -> str:
    """``Flask_Login`` -> ``flask-login``: lowercase, runs of ``-_.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", raw.strip()).lower()


def validate_name(raw: str) -> str:
    name = normalize_name(raw)
    if not _NAME.match(name):
        raise InvalidPackageName(
            "a package name has 1-64 letters, digits and '-', '_' or '.' between them",
            name=raw[:100],
        )
    return name


def parse_version(raw: str) -> semver.Version:
    text = raw.strip()
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise InvalidVersion(
            f"{text[:100]!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.4.0)",
            version=text[:100],
        ) from None


VersionKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def version_key(version: semver.Version) -> VersionKey:
    """A tuple that sorts as SemVer precedence (build metadata ignored), much cheaper to
    compare than ``semver.Version`` (the resolver compares versions a lot)."""
    if not version.prerelease:
        return (version.major, version.minor, version.patch, 1, ())
    # Numeric identifiers sort numerically and before alphanumeric ones.
    parts = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in version.prerelease.split(".")
    )
    return (version.major, version.minor, version.patch, 0, parts)


_OPERATORS: dict[str, Callable[[VersionKey, VersionKey], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed specifier: every (operator, version) comparison must hold."""

    text: str
    comparisons: tuple[tuple[str, semver.Version], ...]
    #: The version of an exact pin (``==1.2.3``), else None; yanked versions match only it.
    pin: semver.Version | None
    allows_prerelease: bool

    bound_keys: tuple[tuple[str, VersionKey], ...] = field(init=False)
    pin_key: VersionKey | None = field(init=False)

    def __post_init__(self) -> None:
        bounds = tuple((op, version_key(bound)) for op, bound in self.comparisons)
        object.__setattr__(self, "bound_keys", bounds)
        object.__setattr__(self, "pin_key", version_key(self.pin) if self.pin else None)

    def contains(self, version: semver.Version) -> bool:
        return self.contains_key(version_key(version))

    def contains_key(self, key: VersionKey) -> bool:
        if key[3] == 0 and not self.allows_prerelease and self.pin_key != key:
            return False
        return all(_OPERATORS[op](key, bound) for op, bound in self.bound_keys)

    def __str__(self) -> str:
        return self.text


@functools.lru_cache(maxsize=4096)
def parse_spec(raw: str) -> Spec:
    """A specifier (cached: the same few texts recur across a dependency graph)."""
    text = " ".join(raw.split())
    if len(text) > MAX_SPEC_LENGTH:
        raise InvalidSpec(f"a version specifier has at most {MAX_SPEC_LENGTH} characters")
    # ">= 1.2" is ">=1.2"; then commas and spaces separate clauses.
    joined = re.sub(r"(==|!=|>=|<=|=|>|<|\^|~)\s+", r"\1", text)
    clauses = [part for part in re.split(r"[,\s]+", joined) if part]
    comparisons: list[tuple[str, semver.Version]] = []
    pin: semver.Version | None = None
    prerelease = False
    exact_clauses = 0
    for clause in clauses:
        if clause == "*":
            continue
        match = _CLAUSE.match(clause)
        if match is None:
            raise InvalidSpec(
                f"{clause[:50]!r} is not a version clause (e.g. '>=1.2,<2', '^1.4', '==1.0.3')",
                spec=text[:MAX_SPEC_LENGTH],
            )
        op, major, minor, patch, pre = match.groups()
        op = op or "=="
        if op == "=":
            op = "=="
        parts = (int(major), int(minor or 0), int(patch or 0))
        full = minor is not None and patch is not None
        try:
            version = semver.Version(*parts, prerelease=pre)
        except ValueError:
            raise InvalidSpec(f"{clause[:50]!r} names no valid version", spec=text) from None
        prerelease = prerelease or bool(pre)
        if pre and not full:
            raise InvalidSpec(f"{clause[:50]!r}: a pre-release needs MAJOR.MINOR.PATCH")
        if op == "^":
            if parts[0] > 0 or minor is None:
                upper = semver.Version(parts[0] + 1, 0, 0)
            elif parts[1] > 0 or patch is None:
                upper = semver.Version(0, parts[1] + 1, 0)
            else:
                upper = semver.Version(0, 0, parts[2] + 1)
            comparisons += [(">=", version), ("<", upper)]
        elif op == "~" or (op == "==" and not full):
            upper = (
                semver.Version(parts[0], parts[1] + 1, 0)
                if minor is not None
                else semver.Version(parts[0] + 1, 0, 0)
            )
            comparisons += [(">=", version), ("<", upper)]
        else:
            comparisons.append((op, version))
            if op == "==":
                exact_clauses += 1
                pin = version
    if exact_clauses != 1 or len(comparisons) != 1:
        pin = None
    return Spec(
        text=text or "*",
        comparisons=tuple(comparisons),
        pin=pin,
        allows_prerelease=prerelease,
    )
