"""Version specifiers and the resolver's guards, without a database."""

from __future__ import annotations

import pytest
import semver

from tollway.marketplace.resolver import (
    Candidate,
    Requirement,
    ResolutionTooComplex,
    resolve,
)
from tollway.marketplace.versioning import (
    InvalidSpec,
    InvalidVersion,
    normalize_name,
    parse_spec,
    parse_version,
)


def matches(spec: str, version: str) -> bool:
    return parse_spec(spec).contains(semver.Version.parse(version))


class TestSpecifiers:
    @pytest.mark.parametrize(
        ("spec", "inside", "outside"),
        [
            ("^1.2.3", ["1.2.3", "1.9.0"], ["1.2.2", "2.0.0"]),
            ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0"]),
            ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0"]),
            (">=1.2, <2", ["1.2.0", "1.99.0"], ["1.1.9", "2.0.0"]),
            (">= 1.0 <2", ["1.0.0"], ["2.0.0"]),
            ("1.2", ["1.2.0", "1.2.7"], ["1.3.0"]),
            ("==1.2.3", ["1.2.3"], ["1.2.4"]),
            ("!=1.3.0", ["1.2.0", "1.4.0"], ["1.3.0"]),
            ("*", ["0.0.1", "9.9.9"], ["2.0.0-rc.1"]),
            ("2.0.0-rc.1", ["2.0.0-rc.1"], ["2.0.0-rc.2"]),
            (">=2.0.0-rc.1", ["2.0.0-rc.2", "2.0.0"], ["2.0.0-alpha"]),
        ],
    )
    def test_ranges_hold_what_they_say(
        self, spec: str, inside: list[str], outside: list[str]
    ) -> None:
        assert all(matches(spec, version) for version in inside)
        assert not any(matches(spec, version) for version in outside)

    def test_build_metadata_does_not_change_precedence(self) -> None:
        assert matches("==1.0.0", "1.0.0+build.9")

    @pytest.mark.parametrize("spec", [">>1", "abc", "1.2.3.4", "^", "=<1", "1.2-rc"])
    def test_nonsense_is_refused(self, spec: str) -> None:
        with pytest.raises(InvalidSpec):
            parse_spec(spec)

    @pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", ""])
    def test_versions_are_strict_semver(self, version: str) -> None:
        with pytest.raises(InvalidVersion):
            parse_version(version)

    def test_names_are_normalised_like_pep_503(self) -> None:
        assert normalize_name("Flask__Login.Ext") == "flask-login-ext"


def candidate(name: str, version: str, *deps: tuple[str, str]) -> Candidate:
    return Candidate(
        name=name,
        version=semver.Version.parse(version),
        state="published",
        sha256="0" * 64,
        signature="sig",
        signature_kid="kid",
        dependencies=[Requirement(name=dep, spec=parse_spec(spec)) for dep, spec in deps],
    )


class TestResolverGuards:
    def test_the_time_limit_stops_a_resolution(self) -> None:
        graph = {"a": [candidate("a", "1.0.0", ("b", "*"))], "b": [candidate("b", "1.0.0")]}
        with pytest.raises(ResolutionTooComplex) as raised:
            resolve([Requirement("a", parse_spec("*"))], graph, max_rounds=100, timeout_ms=0)
        assert raised.value.extra["timeout_ms"] == 0

    def test_the_round_limit_also_bounds_the_fast_path(self) -> None:
        graph = {"a": [candidate("a", "1.0.0", ("b", "*"))], "b": [candidate("b", "1.0.0")]}
        with pytest.raises(ResolutionTooComplex):
            resolve([Requirement("a", parse_spec("*"))], graph, max_rounds=1, timeout_ms=1000)
        chosen = resolve([Requirement("a", parse_spec("*"))], graph, max_rounds=2, timeout_ms=1000)
        assert [c.name for c in chosen] == ["b", "a"]
