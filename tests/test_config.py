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


def test_resume_grace_period() -> None:
    assert parse([]).resume_grace_s == 20.0
    assert parse([], {"CONSILIUM_RESUME_GRACE_S": "0"}).resume_grace_s == 0.0
    assert (
        parse(["--resume-grace-s", "7.5"], {"CONSILIUM_RESUME_GRACE_S": "3"}).resume_grace_s == 7.5
    )
    for bad in ("-1", "nan", "4000"):
        with pytest.raises(ValueError):
            parse(["--resume-grace-s", bad])
