"""The promotion chain is data: any names, any length >= 1; the first is where versions arrive."""

from __future__ import annotations

import pytest

from modelgate.chain import CHAIN, Chain, UnknownEnvironmentError


def test_neighbours_follow_the_order_given():
    chain = Chain(("lab", "qa", "live"))
    assert chain.first == "lab"
    assert chain.last == "live"
    assert [chain.previous(n) for n in chain] == [None, "lab", "qa"]
    assert [chain.next(n) for n in chain] == ["qa", "live", None]


def test_a_chain_of_one_has_no_neighbours():
    chain = Chain(("only",))
    assert chain.previous("only") is None
    assert chain.next("only") is None


def test_names_outside_the_chain_are_refused_naming_the_chain():
    with pytest.raises(UnknownEnvironmentError, match=r"unknown environment 'prod'; the promotion chain is lab -> "):
        Chain(("lab", "live")).next("prod")


@pytest.mark.parametrize("names", [(), ("a", "a"), ("a", ""), ("a,b",)])
def test_empty_repeated_or_unwritable_names_are_refused(names):
    with pytest.raises(ValueError, match="chain"):
        Chain(names)


def test_the_environment_variable_round_trips_and_must_be_set():
    chain = Chain(("lab", "qa", "live"))
    assert Chain.from_environ({CHAIN: chain.value()}) == chain
    assert Chain.from_environ({CHAIN: " lab , qa,live "}) == chain
    with pytest.raises(ValueError, match="MODELGATE_CHAIN is not set"):
        Chain.from_environ({})
