"""Full-text search over listed packages: SQLite FTS5 or PostgreSQL ``tsvector``.

Both backends index the same fields with the same weights (name 10, keywords and
category 4, description 1) and take the same query: the user's text is cut into
words (letters and digits; everything else separates words), each word is quoted,
all words must match, and the last one is a prefix when the text ends with it
(``flask-lo`` finds ``flask-login``; ``c++`` looks for the word ``c``). Operators,
quotes and brackets in the input are therefore plain separators: ``c++``,
``a AND NOT b`` or ``"`` never reach MATCH / ``to_tsquery`` raw.

Order: an exact name match first; then relevance (or downloads, or the newest
release, as asked); ties by downloads, then name.

The index holds listed packages only (at least one published version); the
service calls :meth:`SearchBackend.index` / :meth:`SearchBackend.remove` in the
transaction that changes a package's listing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.marketplace.models import Package

SortOrder = Literal["relevance", "downloads", "recent"]
MAX_QUERY_WORDS = 16
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str | None = None
    category: str | None = None
    author: str | None = None
    license: str | None = None
    min_quality: int | None = None
    sort: SortOrder = "relevance"
    page: int = 1
    limit: int = 20


@dataclass(frozen=True, slots=True)
class SearchPage:
    items: list[Package]
    total: int


def query_words(raw: str | None) -> list[str]:
    """The words of a user's query, lowercased (at most :data:`MAX_QUERY_WORDS`)."""
    if not raw:
        return []
    return [word.lower() for word in _WORD.findall(raw)][:MAX_QUERY_WORDS]


def last_word_is_prefix(raw: str | None, words: list[str]) -> bool:
    """Typing ahead: the last word is a prefix when the text ends with it (``flask-lo``)
    and it has at least two characters; ``c++`` or ``flask `` ask for whole words."""
    if not raw or not words or len(words[-1]) < 2:
        return False
    return raw[-1].isalnum()


def document_key(package_id: str) -> int:
    """A stable 63-bit integer for a package (the FTS5 rowid)."""
    return int.from_bytes(hashlib.sha256(package_id.encode()).digest()[:8], "big") >> 1


class SearchBackend(Protocol):
    """One full-text index of packages inside the database."""

    async def index(self, session: AsyncSession, package: Package) -> None:
        """Add or replace the package's document."""
        ...

    async def remove(self, session: AsyncSession, package_id: str) -> None: ...

    async def search(self, session: AsyncSession, query: SearchQuery) -> SearchPage: ...


def _filters(query: SearchQuery, normalized_name: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Package.listed.is_(True)]
    if query.category:
        conditions.append(Package.category == query.category.strip().lower())
    if query.author:
        author = query.author.strip()
        conditions.append(
            (Package.organization_id == author)
            | (func.lower(Package.author_name) == author.lower())
        )
    if query.license:
        conditions.append(func.lower(Package.license) == query.license.strip().lower())
    if query.min_quality is not None:
        conditions.append(Package.quality_score >= query.min_quality)
    return conditions


def _exact_first(name: str | None) -> list[Any]:
    if not name:
        return []
    # False sorts before True: "not the exact name" first would be wrong, so negate.
    return [(Package.name != name).asc()]


def _order(query: SearchQuery, *, rank: Any | None, exact_name: str | None) -> list[Any]:
    order = _exact_first(exact_name)
    if query.sort == "recent":
        order.append(Package.latest_published_at.desc())
    elif query.sort == "relevance" and rank is not None:
        order.append(rank)
    order += [Package.downloads.desc(), Package.name.asc()]
    return order


async def _run(
    session: AsyncSession, statement: Select[Any], count: Select[Any], query: SearchQuery
) -> SearchPage:
    total = int((await session.execute(count)).scalar_one())
    if total == 0:
        return SearchPage(items=[], total=0)
    offset = (query.page - 1) * query.limit
    if offset >= total:
        return SearchPage(items=[], total=total)
    rows = await session.execute(statement.limit(query.limit).offset(offset))
    return SearchPage(items=list(rows.scalars()), total=total)


async def _without_text(session: AsyncSession, query: SearchQuery) -> SearchPage:
    conditions = _filters(query, None)
    statement = (
        select(Package).where(*conditions).order_by(*_order(query, rank=None, exact_name=None))
    )
    count = select(func.count()).select_from(Package).where(*conditions)
    return await _run(session, statement, count, query)


def _exact_name(raw: str | None) -> str | None:
    if not raw:
        return None
    return re.sub(r"[-_.\s]+", "-", raw.strip()).lower() or None


class SqliteSearch:
    """FTS5: ``marketplace_search(package_id UNINDEXED, name, keywords, description,
    category)``, rowid = :func:`document_key`; bm25 with the column weights above."""

    async def index(self, session: AsyncSession, package: Package) -> None:
        key = document_key(package.id)
        await session.execute(
            text("DELETE FROM marketplace_search WHERE rowid = :key"), {"key": key}
        )
        await session.execute(
            text(
                "INSERT INTO marketplace_search"
                " (rowid, package_id, name, keywords, description, category)"
                " VALUES (:key, :id, :name, :keywords, :description, :category)"
            ),
            {
                "key": key,
                "id": package.id,
                "name": package.name.replace("-", " ") + " " + package.name,
                "keywords": " ".join(package.keywords),
                "description": package.description,
                "category": package.category,
            },
        )

    async def remove(self, session: AsyncSession, package_id: str) -> None:
        await session.execute(
            text("DELETE FROM marketplace_search WHERE rowid = :key"),
            {"key": document_key(package_id)},
        )

    async def search(self, session: AsyncSession, query: SearchQuery) -> SearchPage:
        words = query_words(query.text)
        if not words:
            return await _without_text(session, query)
        quoted = [f'"{word}"' for word in words]
        if last_word_is_prefix(query.text, words):
            quoted[-1] += "*"
        match = " ".join(quoted)
        exact = _exact_name(query.text)
        hits = (
            select(
                literal_column("package_id").label("package_id"),
                literal_column("bm25(marketplace_search, 0.0, 10.0, 4.0, 1.0, 4.0)").label("rank"),
            )
            .select_from(text("marketplace_search"))
            .where(text("marketplace_search MATCH :match"))
            .subquery("hits")
        )
        conditions = _filters(query, exact)
        statement = (
            select(Package)
            .join(hits, hits.c.package_id == Package.id)
            .where(*conditions)
            .order_by(*_order(query, rank=hits.c.rank.asc(), exact_name=exact))
            .params(match=match)
        )
        count = (
            select(func.count())
            .select_from(hits)
            .join(Package, hits.c.package_id == Package.id)
            .where(*conditions)
            .params(match=match)
        )
        return await _run(session, statement, count, query)


class PostgresSearch:
    """``marketplace_search(package_id, document tsvector)`` with a GIN index; the
    ``simple`` configuration (no stemming, like FTS5's unicode61); ``ts_rank`` with
    weights A (name), B (keywords, category), D (description)."""

    async def index(self, session: AsyncSession, package: Package) -> None:
        await session.execute(
            text(
                "INSERT INTO marketplace_search (package_id, document) VALUES (:id,"
                " setweight(to_tsvector('simple', :name), 'A')"
                " || setweight(to_tsvector('simple', :keywords), 'B')"
                " || setweight(to_tsvector('simple', :description), 'D'))"
                " ON CONFLICT (package_id) DO UPDATE SET document = excluded.document"
            ),
            {
                "id": package.id,
                "name": package.name.replace("-", " ") + " " + package.name,
                "keywords": " ".join([*package.keywords, package.category]),
                "description": package.description,
            },
        )

    async def remove(self, session: AsyncSession, package_id: str) -> None:
        await session.execute(
            text("DELETE FROM marketplace_search WHERE package_id = :id"), {"id": package_id}
        )

    async def search(self, session: AsyncSession, query: SearchQuery) -> SearchPage:
        words = query_words(query.text)
        if not words:
            return await _without_text(session, query)
        # Words are letters and digits only, so this tsquery cannot hold an operator.
        tsquery = " & ".join(words)
        if last_word_is_prefix(query.text, words):
            tsquery += ":*"
        exact = _exact_name(query.text)
        index = table("marketplace_search", column("package_id"), column("document"))
        matcher = func.to_tsquery(literal_column("'simple'"), bindparam("tsq"))
        hits = (
            select(
                index.c.package_id.label("package_id"),
                func.ts_rank(
                    literal_column("'{0.1, 0.2, 0.4, 1.0}'"), index.c.document, matcher
                ).label("rank"),
            )
            .where(index.c.document.op("@@")(matcher))
            .subquery("hits")
        )
        conditions = _filters(query, exact)
        statement = (
            select(Package)
            .join(hits, hits.c.package_id == Package.id)
            .where(*conditions)
            .order_by(*_order(query, rank=hits.c.rank.desc(), exact_name=exact))
            .params(tsq=tsquery)
        )
        count = (
            select(func.count())
            .select_from(hits)
            .join(Package, hits.c.package_id == Package.id)
            .where(*conditions)
            .params(tsq=tsquery)
        )
        return await _run(session, statement, count, query)


_SQLITE = SqliteSearch()
_POSTGRES = PostgresSearch()


def search_backend(session: AsyncSession) -> SearchBackend:
    """The backend for the session's database."""
    return _SQLITE if session.get_bind().dialect.name == "sqlite" else _POSTGRES
