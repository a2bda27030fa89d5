"""The short switch interval is on only while heavy work is in flight (flowviz.core.offloop)."""

import sys

import pytest

from flowviz.core import offloop


def test_threads_take_quick_turns_only_while_heavy_work_is_in_flight() -> None:
    usual = sys.getswitchinterval()
    assert usual != pytest.approx(offloop.SWITCH_INTERVAL)
    with offloop.quick_turns():
        assert sys.getswitchinterval() == pytest.approx(offloop.SWITCH_INTERVAL)
        with offloop.quick_turns():  # two answers built at once
            assert sys.getswitchinterval() == pytest.approx(offloop.SWITCH_INTERVAL)
        # the first is still being built
        assert sys.getswitchinterval() == pytest.approx(offloop.SWITCH_INTERVAL)
    assert sys.getswitchinterval() == pytest.approx(usual)


def test_the_usual_interval_comes_back_when_the_work_fails() -> None:
    usual = sys.getswitchinterval()
    with pytest.raises(RuntimeError), offloop.quick_turns():
        raise RuntimeError("the query failed")
    assert sys.getswitchinterval() == pytest.approx(usual)
