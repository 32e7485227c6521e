"""Dependency resolution with ``resolvelib`` over an in-memory graph of versions.

The service loads every package reachable from the request (one query per level of
the graph), then this module resolves without touching the database. Rules:

- draft versions are invisible; newer versions are tried first;
- a yanked version is chosen only when some requirement pins exactly that version
  (``==1.2.0``; PEP 592's rule for yanked releases);
- a conflict is ``409 resolution_impossible`` with ``causes`` such as
  ``"b 1.2.0 requires c<2"``;
- a cycle among the chosen versions is ``409 dependency_cycle`` naming it
  (``a -> b -> a``);
- more than ``max_rounds`` resolver rounds, or more than ``timeout_ms`` of wall-clock
  time, is ``422 resolution_too_complex`` (a guard against abusive graphs).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import semver
from resolvelib import (
    AbstractProvider,
    BaseReporter,
    ResolutionImpossible,
    ResolutionTooDeep,
    Resolver,
)

from tollway.errors import Conflict, Unprocessable
from tollway.marketplace.versioning import Spec, VersionKey, version_key


class ResolutionImpossibleError(Conflict):
    code = "resolution_impossible"
    title = "No set of versions satisfies the requirements"


class DependencyCycle(Conflict):
    code = "dependency_cycle"
    title = "Dependency cycle"


class ResolutionTooComplex(Unprocessable):
    code = "resolution_too_complex"
    title = "Resolution too complex"


@dataclass(frozen=True, slots=True)
class Requirement:
    name: str
    spec: Spec

    def describe(self) -> str:
        text = self.spec.text
        if text == "*":
            return f"{self.name} (any version)"
        if text[:1].isdigit():
            return f"{self.name}=={text}"
        return f"{self.name}{text}"


@dataclass(slots=True)
class Candidate:
    name: str
    version: semver.Version
    state: str
    sha256: str
    signature: str
    signature_kid: str
    dependencies: list[Requirement]
    #: Anything the caller wants back with the answer (package id, price...).
    extra: dict[str, Any] = field(default_factory=dict)
    key: VersionKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = version_key(self.version)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


class _Deadline(Exception):
    """The resolution ran past its time limit."""


class _Provider(AbstractProvider[Requirement, Candidate, str]):
    def __init__(self, graph: Mapping[str, list[Candidate]], deadline: float) -> None:
        self.graph = graph
        self.deadline = deadline
        # resolvelib re-checks every pin against every requirement each round; the
        # objects live as long as the resolution, so their ids are stable keys.
        self._satisfied: dict[tuple[int, int], bool] = {}

    def identify(self, requirement_or_candidate: Requirement | Candidate) -> str:
        return requirement_or_candidate.name

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, Candidate],
        candidates: Mapping[str, Iterator[Candidate]],
        information: Mapping[str, Iterator[Any]],
        backtrack_causes: Sequence[Any],
    ) -> tuple[int, int, str]:
        pinned = any(info.requirement.spec.pin is not None for info in information[identifier])
        return (0 if pinned else 1, len(self.graph.get(identifier, ())), identifier)

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[Requirement]],
        incompatibilities: Mapping[str, Iterator[Candidate]],
    ) -> list[Candidate]:
        if time.monotonic() > self.deadline:
            raise _Deadline
        wanted = list(requirements[identifier])
        excluded = {candidate.key for candidate in incompatibilities[identifier]}
        pins = {req.spec.pin_key for req in wanted if req.spec.pin_key is not None}
        return [
            candidate
            for candidate in self.graph.get(identifier, ())
            if candidate.key not in excluded
            and (candidate.state != "yanked" or candidate.key in pins)
            and all(req.spec.contains_key(candidate.key) for req in wanted)
        ]

    def is_satisfied_by(self, requirement: Requirement, candidate: Candidate) -> bool:
        memo = (id(requirement), id(candidate))
        found = self._satisfied.get(memo)
        if found is None:
            found = self._satisfied[memo] = requirement.spec.contains_key(candidate.key)
        return found

    def get_dependencies(self, candidate: Candidate) -> list[Requirement]:
        return candidate.dependencies


def _cause(information: Any, graph: Mapping[str, list[Candidate]]) -> str:
    requirement: Requirement = information.requirement
    parent: Candidate | None = information.parent
    who = parent.label if parent is not None else "the request"
    text = f"{who} requires {requirement.describe()}"
    versions = graph.get(requirement.name)
    if versions is None:
        return text + " (no such package)"
    if (
        versions
        and all(
            candidate.state == "yanked"
            for candidate in versions
            if requirement.spec.contains(candidate.version)
        )
        and any(requirement.spec.contains(candidate.version) for candidate in versions)
    ):
        return text + " (only yanked versions match; pin one exactly to use it)"
    return text


def _find_cycle(chosen: Mapping[str, Candidate]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for requirement in chosen[name].dependencies:
            child = requirement.name
            if child not in chosen:
                continue
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state:
                found = visit(child)
                if found is not None:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(chosen):
        if name not in state:
            found = visit(name)
            if found is not None:
                return found
    return None


def _dependency_order(chosen: Mapping[str, Candidate]) -> list[Candidate]:
    """Dependencies before their dependents; ties by name."""
    ordered: list[Candidate] = []
    done: set[str] = set()

    def place(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for requirement in sorted(chosen[name].dependencies, key=lambda req: req.name):
            if requirement.name in chosen:
                place(requirement.name)
        ordered.append(chosen[name])

    for name in sorted(chosen):
        place(name)
    return ordered


def _greedy(
    requirements: list[Requirement],
    graph: Mapping[str, list[Candidate]],
    *,
    deadline: float,
    max_rounds: int,
) -> dict[str, Candidate] | None:
    """The fast path: take the newest allowed version of each package in breadth-first
    order. When no requirement ever contradicts an earlier choice this is exactly the
    answer resolvelib gives (newest first everywhere), in one pass; on the first
    contradiction it gives up (None) and resolvelib backtracks properly."""
    chosen: dict[str, Candidate] = {}
    seen: dict[str, list[Requirement]] = {}
    queue = deque(requirements)
    while queue:
        if time.monotonic() > deadline:
            raise _Deadline
        requirement = queue.popleft()
        wanted = seen.setdefault(requirement.name, [])
        wanted.append(requirement)
        current = chosen.get(requirement.name)
        if current is not None:
            if not requirement.spec.contains_key(current.key):
                return None
            continue
        pins = {req.spec.pin_key for req in wanted if req.spec.pin_key is not None}
        candidate = next(
            (
                candidate
                for candidate in graph.get(requirement.name, ())
                if (candidate.state != "yanked" or candidate.key in pins)
                and all(req.spec.contains_key(candidate.key) for req in wanted)
            ),
            None,
        )
        if candidate is None:
            return None
        chosen[requirement.name] = candidate
        if len(chosen) > max_rounds:
            # resolvelib pins one package a round: the same limit for both paths.
            raise ResolutionTooDeep(max_rounds)
        queue.extend(candidate.dependencies)
    return chosen


def resolve(
    requirements: Iterable[Requirement],
    graph: Mapping[str, list[Candidate]],
    *,
    max_rounds: int,
    timeout_ms: int,
) -> list[Candidate]:
    """The chosen version of every package needed, dependencies first.

    ``graph`` maps each known package name to its versions (drafts left out), newest
    first; a name missing from it is an unknown package.
    """
    wanted = list(requirements)
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        fast = _greedy(wanted, graph, deadline=deadline, max_rounds=max_rounds)
        if fast is not None:
            return _checked(fast)
        provider = _Provider(graph, deadline=deadline)
        resolver: Resolver[Requirement, Candidate, str] = Resolver(provider, BaseReporter())
        result = resolver.resolve(wanted, max_rounds=max_rounds)
    except ResolutionImpossible as error:
        causes = sorted({_cause(info, graph) for info in error.causes})
        raise ResolutionImpossibleError(
            "no set of versions satisfies every requirement: " + "; ".join(causes),
            causes=causes,
        ) from None
    except ResolutionTooDeep:
        raise ResolutionTooComplex(
            f"the resolution needed more than {max_rounds} rounds", max_rounds=max_rounds
        ) from None
    except _Deadline:
        raise ResolutionTooComplex(
            f"the resolution took longer than {timeout_ms} ms", timeout_ms=timeout_ms
        ) from None
    return _checked(dict(result.mapping))


def _checked(chosen: dict[str, Candidate]) -> list[Candidate]:
    cycle = _find_cycle(chosen)
    if cycle is not None:
        raise DependencyCycle("the dependencies form a cycle: " + " -> ".join(cycle), cycle=cycle)
    return _dependency_order(chosen)
