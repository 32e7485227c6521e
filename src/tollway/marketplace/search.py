"""Full-text search over listed packages: SQLite FTS5 or PostgreSQL ``tsvector``.

Both backends index the same fields with the same weights (name 10, keywords and
category 4, description 1) and take the same query: the user's text is cut into
words (letters and digits; everything else separates words), each word is quoted,
all words must match, and the last one is a prefix when the text ends with it
(``flask-lo`` finds ``flask-login``; ``c++`` looks for the word ``c``). Operators,
quotes and brackets in the input are therefore plain separators: ``c++``,
``a AND NOT b`` or ``"`` never reach MATCH / ``to_tsquery`` raw.

Order: an exact name match first; then relevance in two tiers (see
:class:`_TextSearch`), or downloads, or the newest release, as asked; ties by
downloads, then name.

The index holds listed packages only (at least one published version); the
service calls :meth:`SearchBackend.index_package` / :meth:`SearchBackend.remove` in
the transaction that changes a package's listing.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    column,
    func,
    literal_column,
    not_,
    select,
    table,
    text,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import TableClause

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

    async def index_package(self, session: AsyncSession, package: Package) -> None:
        """Add or replace the package's document."""
        ...

    async def remove(self, session: AsyncSession, package_id: str) -> None: ...

    async def search(self, session: AsyncSession, query: SearchQuery) -> SearchPage: ...


def _filters(query: SearchQuery, normalized_name: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Package.listed == true()]
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


def _document(package: Package) -> dict[str, Any]:
    """The index row of a package: the searched text and, copied from the package, the
    filter columns (so a relevance search never has to join the packages table)."""
    return {
        "id": package.id,
        "name": package.name.replace("-", " ") + " " + package.name,
        "keywords": " ".join(package.keywords),
        "description": package.description,
        "category": package.category,
        "license_key": package.license.lower(),
        "organization_id": package.organization_id,
        "author_key": package.author_name.lower(),
        "quality_score": package.quality_score,
    }


def _facet(kind: str, value: str) -> str:
    """A filter value as one FTS5 token: a letter for the kind, then the value in hex
    (letters and digits only, so the tokenizer keeps it whole)."""
    return kind + value.encode().hex()


def sqlite_document(document: dict[str, Any]) -> dict[str, Any]:
    """The FTS5 row: the document plus its ``facets`` column (category, license,
    author organization and name, and one token per quality decile reached)."""
    deciles = " ".join(f"q{decile}" for decile in range(0, document["quality_score"] + 1, 10))
    facets = " ".join(
        [
            _facet("c", document["category"]),
            _facet("l", document["license_key"]),
            _facet("o", document["organization_id"]),
            _facet("a", document["author_key"]),
            deciles,
        ]
    )
    return {**document, "facets": facets}


def _index_filters(index: TableClause, query: SearchQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.category:
        conditions.append(index.c.category == query.category.strip().lower())
    if query.author:
        author = query.author.strip()
        conditions.append(
            (index.c.organization_id == author) | (index.c.author_key == author.lower())
        )
    if query.license:
        conditions.append(index.c.license_key == query.license.strip().lower())
    if query.min_quality is not None:
        conditions.append(index.c.quality_score >= query.min_quality)
    return conditions


_INDEX_COLUMNS = (
    "package_id",
    "category",
    "license_key",
    "organization_id",
    "author_key",
    "quality_score",
)


Tier = Literal["all", "strong", "weak"]
TIERS: tuple[Tier, Tier, Tier] = ("all", "strong", "weak")


class _TextSearch(ABC):
    """What both backends share. Relevance comes in two tiers: packages whose name,
    keywords or category hold every word (``strong``) come before packages that need
    the description for some word (``weak``); each tier is ranked by bm25 / ts_rank.
    Beyond being what a user expects, the tiers keep a common word cheap: page one
    ranks only the strong matches, not every description that mentions the word.

    The relevance order is computed on the index alone (match, filters, rank, count),
    then only the page's packages are read; other sort orders need the packages'
    downloads and release dates, so they join."""

    index: TableClause

    @abstractmethod
    def _match(self, words: list[str], query: SearchQuery, tier: Tier) -> tuple[Any, list[Any]]:
        """(the match condition of the tier, the filter conditions it does not cover)."""
        ...

    @abstractmethod
    def _rank(self, words: list[str], query: SearchQuery) -> Any:
        """The rank expression, smaller is more relevant."""
        ...

    @abstractmethod
    def _is(self, package_id: str) -> ColumnElement[bool]:
        """The index row of one package (by its cheapest key)."""
        ...

    def _conditions(self, words: list[str], query: SearchQuery, tier: Tier) -> list[Any]:
        match, residual = self._match(words, query, tier)
        return [match, *residual]

    async def _count(self, session: AsyncSession, conditions: list[Any]) -> int:
        statement = select(func.count()).select_from(self.index).where(*conditions)
        return int((await session.execute(statement)).scalar_one())

    async def search(self, session: AsyncSession, query: SearchQuery) -> SearchPage:
        words = query_words(query.text)
        if not words:
            return await _without_text(session, query)
        exact = _exact_name(query.text)
        if query.sort != "relevance":
            match, _ = self._match(words, query, "all")
            return await self._joined(session, query, match, exact)
        every, strong, weak = (self._conditions(words, query, tier) for tier in TIERS)
        total = await self._count(session, every)
        offset = (query.page - 1) * query.limit
        if total == 0 or offset >= total:
            return SearchPage(items=[], total=total)
        # The exact name holds every word in the name, so it is a strong match.
        first: Package | None = None
        if exact is not None:
            named = (
                await session.execute(
                    select(Package).where(Package.name == exact, Package.listed == true())
                )
            ).scalar_one_or_none()
            if named is not None and await self._count(session, [*strong, self._is(named.id)]):
                first = named
                strong.append(not_(self._is(first.id)))
        strong_total = await self._count(session, strong)
        rank = self._rank(words, query)
        # The page is a window over [first] + strong tier + weak tier.
        segments: list[tuple[str, int]] = [
            ("first", 1 if first is not None else 0),
            ("strong", strong_total),
            ("weak", total - strong_total - (1 if first is not None else 0)),
        ]
        items: list[Package] = []
        start, stop, position = offset, offset + query.limit, 0
        for name, size in segments:
            low, high = max(start, position), min(stop, position + size)
            if low < high:
                if name == "first":
                    assert first is not None
                    items.append(first)
                else:
                    conditions = strong if name == "strong" else weak
                    items += await self._ranked(
                        session, conditions, rank, offset=low - position, limit=high - low
                    )
            position += size
        return SearchPage(items=items, total=total)

    async def _ranked(
        self, session: AsyncSession, conditions: list[Any], rank: Any, *, offset: int, limit: int
    ) -> list[Package]:
        ranked = (
            await session.execute(
                select(self.index.c.package_id, rank.label("rank"))
                .where(*conditions)
                # The id makes equal ranks page deterministically.
                .order_by(rank, self.index.c.package_id)
                .limit(limit)
                .offset(offset)
            )
        ).all()
        ids = [row.package_id for row in ranked]
        packages = {
            package.id: package
            for package in (
                await session.execute(select(Package).where(Package.id.in_(ids)))
            ).scalars()
        }
        rank_of = {row.package_id: row.rank for row in ranked}
        # Equal relevance: the most downloaded first (within the page).
        return sorted(
            (packages[package_id] for package_id in ids if package_id in packages),
            key=lambda p: (rank_of[p.id], -p.downloads, p.name),
        )

    async def _joined(
        self,
        session: AsyncSession,
        query: SearchQuery,
        match: Any,
        exact: str | None,
    ) -> SearchPage:
        hits = select(self.index.c.package_id).where(match).subquery("hits")
        conditions = _filters(query, exact)
        statement = (
            select(Package)
            .join(hits, hits.c.package_id == Package.id)
            .where(*conditions)
            .order_by(*_order(query, rank=None, exact_name=exact))
        )
        count = (
            select(func.count())
            .select_from(hits)
            .join(Package, hits.c.package_id == Package.id)
            .where(*conditions)
        )
        return await _run(session, statement, count, query)


class SqliteSearch(_TextSearch):
    """FTS5: ``marketplace_search(package_id UNINDEXED, name, keywords, description,
    category, facets, license_key UNINDEXED, organization_id UNINDEXED, author_key
    UNINDEXED, quality_score UNINDEXED)``, rowid = :func:`document_key`; bm25 with the
    column weights above (``facets`` weighs nothing: it only filters)."""

    index = table("marketplace_search", *(column(name) for name in _INDEX_COLUMNS), column("rowid"))

    async def index_package(self, session: AsyncSession, package: Package) -> None:
        key = document_key(package.id)
        await session.execute(
            text("DELETE FROM marketplace_search WHERE rowid = :key"), {"key": key}
        )
        await session.execute(
            text(
                "INSERT INTO marketplace_search (rowid, package_id, name, keywords,"
                " description, category, facets, license_key, organization_id, author_key,"
                " quality_score) VALUES (:key, :id, :name, :keywords, :description,"
                " :category, :facets, :license_key, :organization_id, :author_key,"
                " :quality_score)"
            ),
            {"key": key, **sqlite_document(_document(package))},
        )

    async def remove(self, session: AsyncSession, package_id: str) -> None:
        await session.execute(
            text("DELETE FROM marketplace_search WHERE rowid = :key"),
            {"key": document_key(package_id)},
        )

    def _match(self, words: list[str], query: SearchQuery, tier: Tier) -> tuple[Any, list[Any]]:
        # The filters are facet tokens in the MATCH expression (an intersection of
        # posting lists, cheap) rather than comparisons read from each matching row.
        quoted = [f'"{word}"' for word in words]
        if last_word_is_prefix(query.text, words):
            quoted[-1] += "*"
        phrase = "(" + " ".join(quoted) + ")"
        everywhere = "{name keywords description category} : " + phrase
        strongly = "{name keywords category} : " + phrase
        text_part = {
            "all": everywhere,
            "strong": strongly,
            "weak": f"({everywhere} NOT {strongly})",
        }[tier]
        parts = [text_part]
        if query.category:
            parts.append(f'facets : "{_facet("c", query.category.strip().lower())}"')
        if query.license:
            parts.append(f'facets : "{_facet("l", query.license.strip().lower())}"')
        if query.author:
            author = query.author.strip()
            parts.append(f'facets : ("{_facet("o", author)}" OR "{_facet("a", author.lower())}")')
        residual: list[Any] = []
        if query.min_quality:
            decile = min(100, query.min_quality) // 10 * 10
            parts.append(f'facets : "q{decile}"')
            if decile != query.min_quality:
                residual.append(self.index.c.quality_score >= query.min_quality)
        match = text(f"marketplace_search MATCH :match_{tier}").bindparams(
            bindparam(f"match_{tier}", " AND ".join(parts))
        )
        return match, residual

    def _rank(self, words: list[str], query: SearchQuery) -> Any:
        return literal_column("bm25(marketplace_search, 0.0, 10.0, 4.0, 1.0, 4.0, 0.0)")

    def _is(self, package_id: str) -> ColumnElement[bool]:
        return column("rowid") == document_key(package_id)


class PostgresSearch(_TextSearch):
    """``marketplace_search(package_id, document tsvector, strong tsvector, <filter
    columns>)`` with GIN indexes on both vectors; the ``simple`` configuration (no
    stemming, like FTS5's unicode61); ``ts_rank`` with weights A (name), B (keywords,
    category), D (description)."""

    index = table("marketplace_search", *(column(name) for name in _INDEX_COLUMNS))

    async def index_package(self, session: AsyncSession, package: Package) -> None:
        document = _document(package)
        document["keywords"] = document["keywords"] + " " + package.category
        await session.execute(
            text(POSTGRES_UPSERT),
            document,
        )

    async def remove(self, session: AsyncSession, package_id: str) -> None:
        await session.execute(
            text("DELETE FROM marketplace_search WHERE package_id = :id"), {"id": package_id}
        )

    async def search(self, session: AsyncSession, query: SearchQuery) -> SearchPage:
        # asyncpg prepares statements, and after five runs PostgreSQL may switch to a
        # generic plan that cannot see the tsquery's selectivity (three times slower on a
        # common word); plan each search for its own parameters.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        return await super().search(session, query)

    def _tsquery(self, words: list[str], query: SearchQuery) -> Any:
        # Words are letters and digits only, so this tsquery cannot hold an operator.
        terms = list(words)
        if last_word_is_prefix(query.text, words):
            terms[-1] += ":*"
        return func.to_tsquery(literal_column("'simple'"), " & ".join(terms))

    def _match(self, words: list[str], query: SearchQuery, tier: Tier) -> tuple[Any, list[Any]]:
        tsquery = self._tsquery(words, query)
        everywhere = column("document").op("@@")(tsquery)
        strongly = column("strong").op("@@")(tsquery)
        match = {"all": everywhere, "strong": strongly, "weak": everywhere & not_(strongly)}[tier]
        return match, _index_filters(self.index, query)

    def _rank(self, words: list[str], query: SearchQuery) -> Any:
        # Negated, so that like bm25 a smaller value is more relevant.
        return -func.ts_rank(
            literal_column("'{0.1, 0.2, 0.4, 1.0}'"),
            column("document"),
            self._tsquery(words, query),
        )

    def _is(self, package_id: str) -> ColumnElement[bool]:
        return self.index.c.package_id == package_id


#: The PostgreSQL index row: ``document`` (everything, weighted) and ``strong`` (name,
#: keywords and category: the strong relevance tier) plus the filter columns.
POSTGRES_INSERT = (
    "INSERT INTO marketplace_search (package_id, document, strong, category, license_key,"
    " organization_id, author_key, quality_score) VALUES (:id,"
    " setweight(to_tsvector('simple', :name), 'A')"
    " || setweight(to_tsvector('simple', :keywords), 'B')"
    " || setweight(to_tsvector('simple', :description), 'D'),"
    " to_tsvector('simple', :name || ' ' || :keywords),"
    " :category, :license_key, :organization_id, :author_key, :quality_score)"
)
POSTGRES_UPSERT = (
    "INSERT INTO marketplace_search (package_id, document, strong, category, license_key,"
    " organization_id, author_key, quality_score) VALUES (:id,"
    " setweight(to_tsvector('simple', :name), 'A')"
    " || setweight(to_tsvector('simple', :keywords), 'B')"
    " || setweight(to_tsvector('simple', :description), 'D'),"
    " to_tsvector('simple', :name || ' ' || :keywords),"
    " :category, :license_key, :organization_id, :author_key, :quality_score)"
    " ON CONFLICT (package_id) DO UPDATE SET document = excluded.document,"
    " strong = excluded.strong, category = excluded.category,"
    " license_key = excluded.license_key, organization_id = excluded.organization_id,"
    " author_key = excluded.author_key, quality_score = excluded.quality_score"
)

_SQLITE = SqliteSearch()
_POSTGRES = PostgresSearch()


def search_backend(session: AsyncSession) -> SearchBackend:
    """The backend for the session's database."""
    return _SQLITE if session.get_bind().dialect.name == "sqlite" else _POSTGRES
