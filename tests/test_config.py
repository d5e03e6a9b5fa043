"""Server settings: flags beat environment variables, which beat defaults."""

from __future__ import annotations

import pytest

from signaling.config import Settings, build_parser, settings_from


def parse(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    return settings_from(build_parser().parse_args(["serve", *argv]), env or {})


def test_loss_repair_is_on_by_default() -> None:
    assert parse([]).nack is True


@pytest.mark.parametrize("value", ["0", "off", "false", "NO"])
def test_loss_repair_can_be_switched_off_for_comparisons(value: str) -> None:
    assert parse(["--no-nack"]).nack is False
    assert parse([], {"CONSILIUM_NACK": value}).nack is False
    assert parse([], {"CONSILIUM_NACK": "1"}).nack is True
