"""The marketplace's demo: four author organizations and about thirty template
packages with versions, dependencies, free and paid, a deprecated and a yanked
version. Safe to run twice: existing packages and versions are left as they are."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tollway.accounts.service.members import membership_service
from tollway.accounts.service.users import user_service
from tollway.kit.demo import register_demo_loader
from tollway.kit.signing import load_key_ring
from tollway.kit.sweeps import SweepContext
from tollway.marketplace import repository
from tollway.marketplace.service.env import MarketEnv
from tollway.marketplace.service.listing import listing_service
from tollway.marketplace.service.versions import version_service
from tollway.marketplace.storage import build_storage

AUTHORS = {
    "acme": ("demo-acme@tollway.example", "Acme Templates"),
    "northwind": ("demo-northwind@tollway.example", "Northwind Labs"),
    "harbor": ("demo-harbor@tollway.example", "Blue Harbor"),
    "kite": ("demo-kite@tollway.example", "Kite Tools"),
}


@dataclass(frozen=True)
class DemoVersion:
    version: str
    dependencies: list[dict[str, str]] = field(default_factory=list)
    #: After publishing: "deprecate" or "yank".
    then: str | None = None


@dataclass(frozen=True)
class DemoPackage:
    author: str
    name: str
    category: str
    keywords: list[str]
    license: str
    description: str
    versions: list[DemoVersion]
    price_minor: int = 0


def _v(version: str, *deps: str, then: str | None = None) -> DemoVersion:
    dependencies = []
    for dep in deps:
        name, _, spec = dep.partition(" ")
        dependencies.append({"name": name, "spec": spec or "*"})
    return DemoVersion(version=version, dependencies=dependencies, then=then)


# Dependencies come before their dependents: each is published when it is reached.
PACKAGES: list[DemoPackage] = [
    DemoPackage(
        "acme",
        "python-base",
        "python",
        ["python", "pyproject", "ruff"],
        "MIT",
        "A modern Python project skeleton: pyproject, ruff, mypy, pytest and a "
        "Makefile that runs them all.",
        [_v("1.0.0"), _v("1.1.0"), _v("2.0.0")],
    ),
    DemoPackage(
        "acme",
        "github-actions-ci",
        "devops",
        ["ci", "github", "actions"],
        "MIT",
        "GitHub Actions workflows for lint, test and release with caching and a build matrix.",
        [_v("1.0.0"), _v("1.2.0")],
    ),
    DemoPackage(
        "acme",
        "docker-compose-dev",
        "devops",
        ["docker", "compose", "postgres"],
        "Apache-2.0",
        "Docker Compose development stack: PostgreSQL, Redis and Mailpit with health checks.",
        [_v("1.0.0"), _v("1.1.0")],
    ),
    DemoPackage(
        "acme",
        "fastapi-starter",
        "web",
        ["fastapi", "api", "python"],
        "MIT",
        "FastAPI service template with settings, structured logging, health checks and tests.",
        [
            _v("1.0.0", "python-base ^1"),
            _v("1.1.0", "python-base ^1", then="yank"),
            _v("2.0.0", "python-base ^2", "github-actions-ci ^1"),
        ],
    ),
    DemoPackage(
        "acme",
        "fastapi-crud",
        "web",
        ["fastapi", "crud", "sqlalchemy"],
        "MIT",
        "CRUD endpoints over SQLAlchemy 2 models with pagination, filtering and "
        "Alembic migrations.",
        [_v("1.0.0", "fastapi-starter ^2")],
    ),
    DemoPackage(
        "acme",
        "fastapi-auth",
        "web",
        ["fastapi", "auth", "jwt", "oauth"],
        "MIT",
        "Login, JWT access and refresh tokens, OAuth2 with GitHub and Google for FastAPI services.",
        [_v("1.0.0", "fastapi-starter ^2")],
    ),
    DemoPackage(
        "acme",
        "fastapi-saas-kit",
        "web",
        ["fastapi", "saas", "billing", "stripe"],
        "LicenseRef-Acme-Commercial",
        "Complete SaaS backend: tenants, auth, Stripe billing, usage metering and an "
        "admin API, ready to deploy.",
        [_v("1.0.0", "fastapi-crud ^1", "fastapi-auth ^1", "docker-compose-dev ^1")],
        price_minor=4900,
    ),
    DemoPackage(
        "northwind",
        "flask-login-starter",
        "web",
        ["flask", "login", "auth"],
        "BSD-3-Clause",
        "Flask application with Flask-Login, sessions, password reset and CSRF protection.",
        [_v("0.9.0", then="deprecate"), _v("1.0.0")],
    ),
    DemoPackage(
        "northwind",
        "django-starter",
        "web",
        ["django", "python", "postgres"],
        "BSD-3-Clause",
        "Django project with custom user model, PostgreSQL settings, Celery and a ready admin.",
        [_v("1.0.0"), _v("1.1.0"), _v("2.0.0-rc.1")],
    ),
    DemoPackage(
        "northwind",
        "django-htmx",
        "web",
        ["django", "htmx", "frontend"],
        "MIT",
        "Server-rendered Django pages with htmx partials, form validation and infinite scroll.",
        [_v("1.0.0", "django-starter ^1")],
    ),
    DemoPackage(
        "northwind",
        "nextjs-app",
        "web",
        ["nextjs", "react", "typescript"],
        "MIT",
        "Next.js app router template with TypeScript, Tailwind, ESLint and Playwright tests.",
        [_v("1.0.0"), _v("1.1.0")],
    ),
    DemoPackage(
        "northwind",
        "nextjs-dashboard",
        "web",
        ["nextjs", "dashboard", "charts"],
        "LicenseRef-Northwind-Pro",
        "Admin dashboard for Next.js: charts, tables with server pagination, auth and dark mode.",
        [_v("1.0.0", "nextjs-app ^1")],
        price_minor=2900,
    ),
    DemoPackage(
        "northwind",
        "react-component-lib",
        "frontend",
        ["react", "storybook"],
        "MIT",
        "React component library template with Storybook, Vitest and publishing to npm.",
        [_v("1.0.0")],
    ),
    DemoPackage(
        "harbor",
        "rust-cli",
        "cli",
        ["rust", "cli", "clap"],
        "MIT OR Apache-2.0",
        "Rust command-line tool with clap, anyhow, tracing and cross-compiled release builds.",
        [_v("1.0.0"), _v("1.1.0")],
    ),
    DemoPackage(
        "harbor",
        "go-service",
        "web",
        ["go", "http", "grpc"],
        "Apache-2.0",
        "Go HTTP and gRPC service with graceful shutdown, Prometheus metrics and OpenTelemetry.",
        [_v("1.0.0"), _v("1.0.1")],
    ),
    DemoPackage(
        "harbor",
        "typer-cli",
        "cli",
        ["python", "typer", "cli"],
        "MIT",
        "Python CLI with Typer, rich output, config files and shell completion.",
        [_v("1.0.0", "python-base >=1")],
    ),
    DemoPackage(
        "harbor",
        "terraform-aws-base",
        "devops",
        ["terraform", "aws", "vpc"],
        "MPL-2.0",
        "Terraform modules for an AWS VPC, ECS cluster, RDS and an S3 bucket with sane defaults.",
        [_v("1.0.0"), _v("1.1.0")],
    ),
    DemoPackage(
        "harbor",
        "k8s-helm-chart",
        "devops",
        ["kubernetes", "helm"],
        "Apache-2.0",
        "Helm chart for a web service: deployment, HPA, ingress, secrets and probes.",
        [_v("1.0.0", "docker-compose-dev *")],
    ),
    DemoPackage(
        "harbor",
        "platform-ops-kit",
        "devops",
        ["kubernetes", "terraform", "sre"],
        "LicenseRef-BlueHarbor-Commercial",
        "Production operations kit: Terraform, Helm, dashboards, alerts and "
        "runbooks for a small platform team.",
        [_v("1.0.0", "terraform-aws-base ^1", "k8s-helm-chart ^1")],
        price_minor=9900,
    ),
    DemoPackage(
        "kite",
        "data-pipeline",
        "data",
        ["python", "etl", "duckdb"],
        "MIT",
        "Batch data pipeline with DuckDB, Parquet files, data checks and scheduled runs.",
        [_v("1.0.0", "python-base ^2")],
    ),
    DemoPackage(
        "kite",
        "dbt-project",
        "data",
        ["dbt", "sql", "analytics"],
        "Apache-2.0",
        "dbt project with staging and mart layers, tests, docs and CI.",
        [_v("1.0.0")],
    ),
    DemoPackage(
        "kite",
        "jupyter-research",
        "data",
        ["jupyter", "notebooks", "pandas"],
        "BSD-3-Clause",
        "Reproducible notebook research repository with pinned environments and nbconvert reports.",
        [_v("1.0.0")],
    ),
    DemoPackage(
        "kite",
        "llm-rag-app",
        "ai",
        ["llm", "rag", "embeddings"],
        "MIT",
        "Retrieval augmented generation app: document loaders, embeddings, vector "
        "search and an API.",
        [_v("1.0.0", "fastapi-starter ^2"), _v("1.1.0", "fastapi-starter ^2")],
    ),
    DemoPackage(
        "kite",
        "llm-eval-harness",
        "ai",
        ["llm", "evaluation", "testing"],
        "Apache-2.0",
        "Evaluation harness for LLM prompts: datasets, graders, regression reports.",
        [_v("1.0.0", "python-base ^2")],
    ),
    DemoPackage(
        "kite",
        "ai-agent-pro",
        "ai",
        ["llm", "agents", "tools"],
        "LicenseRef-Kite-Commercial",
        "Agent framework template with tool calling, memory, tracing and a review "
        "UI; commercial licence.",
        [_v("1.0.0", "llm-rag-app ^1", "llm-eval-harness ^1")],
        price_minor=3900,
    ),
    DemoPackage(
        "kite",
        "ml-training",
        "ai",
        ["pytorch", "training", "mlflow"],
        "MIT",
        "PyTorch training project with configs, MLflow tracking and checkpoints.",
        [_v("1.0.0", "python-base ^2")],
    ),
    DemoPackage(
        "acme",
        "mobile-expo",
        "mobile",
        ["react-native", "expo", "mobile"],
        "MIT",
        "Expo React Native app with navigation, auth screens and OTA updates.",
        [_v("1.0.0")],
    ),
    DemoPackage(
        "northwind",
        "chrome-extension",
        "frontend",
        ["chrome", "extension"],
        "MIT",
        "Chrome extension template (Manifest V3) with TypeScript, popup and options page.",
        [_v("1.0.0")],
    ),
    DemoPackage(
        "harbor",
        "static-docs-site",
        "docs",
        ["docs", "mkdocs"],
        "CC-BY-4.0",
        "Documentation site with MkDocs Material, versioned docs and link checking.",
        [_v("1.0.0")],
    ),
    DemoPackage(
        "kite",
        "openapi-client-gen",
        "cli",
        ["openapi", "codegen", "sdk"],
        "MIT",
        "Generate typed Python and TypeScript SDKs from an OpenAPI document.",
        [_v("1.0.0", "typer-cli ^1")],
    ),
]


def _archive(package: DemoPackage, version: str) -> bytes:
    """A small real .tar.gz with a README, so downloads can be opened."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        readme = f"# {package.name} {version}\n\n{package.description}\n".encode()
        info = tarfile.TarInfo(f"{package.name}-{version}/README.md")
        info.size = len(readme)
        info.mtime = 0
        archive.addfile(info, io.BytesIO(readme))
    return buffer.getvalue()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


@register_demo_loader("marketplace", order=200)
async def load_marketplace(context: SweepContext) -> str:
    env = MarketEnv(
        settings=context.settings,
        clock=context.clock,
        keys=load_key_ring(context.settings),
        storage=build_storage(context.settings),
    )
    created_packages = created_versions = 0
    async with context.database.transaction() as session:
        organizations: dict[str, str] = {}
        for key, (email, org_name) in AUTHORS.items():
            user = await user_service.get_user_by_email(session, email)
            if user is None:
                tenancy = await user_service.register(
                    session,
                    email=email,
                    password=None,
                    now=context.clock.now(),
                    name=org_name,
                    organization_name=org_name,
                    email_verified=True,
                )
                organizations[key] = tenancy.organization.id
            else:
                membership = await membership_service.default_membership(session, user.id)
                organizations[key] = membership.organization_id
        for spec in PACKAGES:
            organization_id = organizations[spec.author]
            package = await repository.get_package_by_name(session, spec.name)
            if package is None:
                package = await listing_service.create_package(
                    session,
                    env,
                    organization_id=organization_id,
                    name=spec.name,
                    description=spec.description,
                    category=spec.category,
                    keywords=spec.keywords,
                    license=spec.license,
                    price_amount=spec.price_minor or None,
                    price_currency="usd" if spec.price_minor else None,
                )
                created_packages += 1
            existing = {
                v.version for v in await repository.list_versions(session, package_id=package.id)
            }
            for demo_version in spec.versions:
                if demo_version.version in existing:
                    continue
                await version_service.create_version(
                    session,
                    env,
                    organization_id=organization_id,
                    package_ref=package.id,
                    version=demo_version.version,
                    dependencies=json.dumps(demo_version.dependencies),
                    artifact=_once(_archive(spec, demo_version.version)),
                    publish=True,
                )
                created_versions += 1
                if demo_version.then is not None:
                    await version_service.transition(
                        session,
                        env,
                        organization_id=organization_id,
                        package_ref=package.id,
                        version=demo_version.version,
                        action=demo_version.then,
                        reason="superseded by a newer release"
                        if demo_version.then == "deprecate"
                        else "a broken build was published",
                    )
    return (
        f"{created_packages} packages and {created_versions} versions published "
        f"({len(PACKAGES)} demo packages in all)"
    )
