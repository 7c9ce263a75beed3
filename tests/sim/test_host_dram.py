"""Host DDR5 on the DRAM engine: the read rates the offload systems stream and gather at."""

from __future__ import annotations

import pytest

from cemsim.errors import CemsimError
from cemsim.sim.host_memory import host_bandwidth, host_spec
from tests.sim.conftest import REPO, load

HOST = REPO / "hwconfigs" / "h100-host-offload.yaml"


def test_rates_lie_below_the_pins_and_above_the_link():
    cfg = load(HOST).host_memory
    spec, channels = host_spec(cfg)
    assert channels == 16  # 8 DIMM channels x two 32-bit sub-channels
    peak = channels * spec.channel_peak_bytes_per_s
    assert peak == pytest.approx(8 * 38.4e9, rel=1e-3)
    stream, gather = host_bandwidth(cfg), host_bandwidth(cfg, gather=True)
    # a dense stream: no faster than the pins, and most of them (row hits; refresh and turns cost a little)
    assert 0.55 * peak < stream <= peak
    assert 0.3 * peak < gather < peak
    # either way faster than PCIe 5.0 x16 (63 GB/s): the link, not DDR5, paces host offload
    assert min(stream, gather) > 63e9


def test_channel_bandwidth_must_be_whole_engine_channels():
    cfg = load(HOST, **{"host_memory.channel_bandwidth": "30 GB/s"}).host_memory
    with pytest.raises(CemsimError, match="whole number"):
        host_spec(cfg)
