"""Demo loaders: each domain registers one; ``tollway demo`` runs them all in order.

A loader must be safe to run twice (look before inserting), so ``tollway demo`` can
be repeated and ``TOLLWAY_LOAD_DEMO=true`` can run it at every start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tollway.kit.sweeps import SweepContext

DemoLoader = Callable[[SweepContext], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class RegisteredLoader:
    name: str
    order: int
    load: DemoLoader


_LOADERS: dict[str, RegisteredLoader] = {}


def register_demo_loader(name: str, *, order: int = 100) -> Callable[[DemoLoader], DemoLoader]:
    """Decorator: ``load`` returns a one-line summary of what it made or found."""

    def decorator(load: DemoLoader) -> DemoLoader:
        _LOADERS[name] = RegisteredLoader(name=name, order=order, load=load)
        return load

    return decorator


def registered_loaders() -> list[RegisteredLoader]:
    return sorted(_LOADERS.values(), key=lambda loader: (loader.order, loader.name))


async def run_demo_loaders(context: SweepContext) -> list[tuple[str, str]]:
    return [(loader.name, await loader.load(context)) for loader in registered_loaders()]
