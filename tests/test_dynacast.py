"""Dynacast decisions: layers nobody prefers are switched off after a quiet period."""

from __future__ import annotations

import pytest

from sfu.dynacast import DynacastController


def test_starts_with_every_layer_and_keeps_them_while_wanted() -> None:
    d = DynacastController(3, off_delay_ms=5000)
    assert d.active() == (True, True, True)
    assert d.update([2, 0, None], 0) is False
    assert d.top_layer == 2


def test_top_layer_goes_off_only_after_the_quiet_period() -> None:
    d = DynacastController(3, off_delay_ms=5000)
    assert d.update([1, 0], 0) is False  # demand fell: the clock starts
    assert d.update([1], 4999) is False
    assert d.active() == (True, True, True)
    assert d.update([1], 5000) is True
    assert d.active() == (True, True, False)
    assert d.changes == 1


def test_a_blip_of_demand_resets_the_quiet_period() -> None:
    d = DynacastController(3, off_delay_ms=5000)
    d.update([0], 0)
    d.update([2], 3000)  # someone maximised the tile again
    assert d.update([0], 4000) is False
    assert d.update([0], 8999) is False
    assert d.update([0], 9000) is True
    assert d.active() == (True, False, False)


def test_demand_brings_layers_back_at_once() -> None:
    d = DynacastController(3, off_delay_ms=0)
    d.update([None, None], 0)
    assert d.update([None], 0) is True
    assert d.active() == (True, False, False)  # the lowest layer always stays
    assert d.update([2], 1) is True
    assert d.active() == (True, True, True)


@pytest.mark.parametrize("preferred", [[7], [3, 9]])
def test_preferences_above_the_top_are_capped(preferred: list[int]) -> None:
    d = DynacastController(3, off_delay_ms=0)
    assert d.update(preferred, 0) is False
    assert d.top_layer == 2


def test_single_layer_and_bad_sizes() -> None:
    d = DynacastController(1, off_delay_ms=0)
    assert d.update([None], 0) is False
    assert d.active() == (True,)
    with pytest.raises(ValueError):
        DynacastController(0)
