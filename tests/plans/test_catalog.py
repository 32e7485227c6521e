from __future__ import annotations

import copy
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tollway.plans.catalog import (
    DEFAULT_CATALOG_PATH,
    CatalogError,
    Overage,
    load_catalog_file,
    parse_catalog,
)


@pytest.fixture
def document() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_CATALOG_PATH.read_text())


class TestShippedCatalog:
    def test_free_pro_and_enterprise_follow_the_seeds(self) -> None:
        catalog = load_catalog_file(DEFAULT_CATALOG_PATH)
        free, pro, enterprise = (catalog.plans[p] for p in ("free", "pro", "enterprise"))
        assert free.price.amount_minor == 0
        assert free.features["api"].quota == 1000
        assert free.features["templates.install"].quota == 5
        assert free.features["storage"].quota == 1024**3
        assert "custom_ontologies" not in free.features
        assert "ai.generate" not in free.features
        assert pro.price.amount_minor == 14900
        assert pro.features["api"].quota == 100_000
        assert pro.features["templates.install"].quota == 50
        assert pro.features["storage"].quota == 50 * 1024**3
        assert "custom_ontologies" in pro.features
        assert pro.monthly_tokens == 200
        assert enterprise.price.amount_minor == 39900
        assert enterprise.monthly_tokens == 2000
        assert all(feature.quota is None for feature in enterprise.features.values())

    def test_packs_taxes_dunning_grace_and_commission(self) -> None:
        catalog = load_catalog_file(DEFAULT_CATALOG_PATH)
        packs = {pack.tokens: pack.price.amount_minor for pack in catalog.token_packs.values()}
        assert packs == {500: 2900, 2000: 7900}
        assert catalog.dunning_schedule_days == (2, 5, 7, 7)
        assert catalog.grace_days == 14
        assert catalog.final_dunning_policy == "unpaid"
        assert catalog.commission_percent == Decimal(15)
        assert catalog.tax_rates["DE"].percent == Decimal(19)
        assert catalog.tax_rates["DE"].inclusive is True

    def test_degradation_policies_follow_the_seeds(self) -> None:
        catalog = load_catalog_file(DEFAULT_CATALOG_PATH)
        assert catalog.features["ai.generate"].degradation == "immediate"
        assert catalog.features["sync"].degradation == "after_grace"
        assert catalog.features["api"].degradation == "never"

    def test_abuse_values_are_the_seeds(self) -> None:
        abuse = load_catalog_file(DEFAULT_CATALOG_PATH).plans["pro"].abuse
        assert (abuse.requests_per_minute, abuse.min_interval_seconds) == (30, 3)
        assert (abuse.max_credits_per_request, abuse.max_output_units) == (10, 2000)
        assert abuse.fraud_credits_per_hour == 500
        assert (abuse.max_failures, abuse.failure_window_seconds) == (5, 900)


class TestOverage:
    def test_pro_api_calls_above_the_quota_are_billed_per_thousand(self) -> None:
        pro = load_catalog_file(DEFAULT_CATALOG_PATH).plans["pro"]
        api = pro.features["api"]
        assert (api.quota, api.enforcement) == (100_000, "soft")
        assert api.overage == Overage(unit_amount_minor=100, per_units=1000)

    def test_free_has_no_overage_and_keeps_a_hard_quota(self) -> None:
        free = load_catalog_file(DEFAULT_CATALOG_PATH).plans["free"]
        assert (free.features["api"].enforcement, free.features["api"].overage) == ("hard", None)

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            ({"quota": 10, "enforcement": "hard", "overage": {"unit_amount": 1}}, "soft"),
            ({"quota": 10, "overage": {"unit_amount": 1}}, "soft"),
            ({"enforcement": "soft", "overage": {"unit_amount": 1}}, "quota"),
            ({"quota": 10, "enforcement": "soft", "overage": {"unit_amount": 1.5}}, "integer"),
            (
                {"quota": 10, "enforcement": "soft", "overage": {"unit_amount": 1, "per_units": 0}},
                "at least 1",
            ),
            ({"quota": 10, "enforcement": "soft", "overage": 5}, "table"),
        ],
    )
    def test_overage_needs_a_soft_quota_and_integer_prices(
        self, document: dict[str, Any], entry: dict[str, Any], message: str
    ) -> None:
        document["plans"]["pro"]["features"]["sync"] = entry
        with pytest.raises(CatalogError, match=message):
            parse_catalog(document)


class TestInvalidCatalogs:
    def test_a_float_price_is_refused(self, document: dict[str, Any]) -> None:
        document["plans"]["pro"]["price"]["amount"] = 149.0
        with pytest.raises(CatalogError, match=r"plans\.pro\.price\.amount"):
            parse_catalog(document)

    def test_a_plan_or_pack_priced_in_a_made_up_currency_is_refused(
        self, document: dict[str, Any]
    ) -> None:
        plan = copy.deepcopy(document)
        plan["plans"]["pro"]["price"]["currency"] = "zzz"
        with pytest.raises(CatalogError, match=r"plans\.pro\.price\.currency.*ISO 4217"):
            parse_catalog(plan)
        document["token_packs"]["tokens_500"]["price"]["currency"] = "xts"
        with pytest.raises(CatalogError, match="ISO 4217"):
            parse_catalog(document)

    def test_a_float_tax_rate_is_refused(self, document: dict[str, Any]) -> None:
        document["tax_rates"]["DE"]["percent"] = 19.0
        with pytest.raises(CatalogError, match="percent"):
            parse_catalog(document)

    def test_a_feature_on_an_undeclared_meter_is_refused(self, document: dict[str, Any]) -> None:
        document["features"]["api"]["meter"] = "nope"
        with pytest.raises(CatalogError, match="meter 'nope' is not declared"):
            parse_catalog(document)

    def test_a_plan_granting_an_undeclared_feature_is_refused(
        self, document: dict[str, Any]
    ) -> None:
        document["plans"]["free"]["features"]["teleport"] = {}
        with pytest.raises(CatalogError, match="teleport"):
            parse_catalog(document)

    def test_a_unique_meter_needs_a_property(self, document: dict[str, Any]) -> None:
        del document["meters"]["templates"]["property"]
        with pytest.raises(CatalogError, match="needs a property"):
            parse_catalog(document)

    def test_unknown_enum_values_are_refused(self, document: dict[str, Any]) -> None:
        broken = copy.deepcopy(document)
        broken["features"]["sync"]["degradation"] = "sometimes"
        with pytest.raises(CatalogError, match="degradation"):
            parse_catalog(broken)
        document["meters"]["api_calls"]["aggregation"] = "median"
        with pytest.raises(CatalogError, match="aggregation"):
            parse_catalog(document)

    def test_the_default_plan_must_exist(self, document: dict[str, Any]) -> None:
        document["default_plan"] = "gold"
        with pytest.raises(CatalogError, match="default_plan"):
            parse_catalog(document)

    def test_a_file_that_is_not_toml_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.toml"
        path.write_text("[plans\n")
        with pytest.raises(CatalogError, match="not valid TOML"):
            load_catalog_file(path)
