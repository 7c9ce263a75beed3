"""DRAM config loaders: presets (provenance on every number), DRAMsim3 .ini, Ramulator timings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim.dram import available_presets, load_dram_spec
from cemsim.dram.loader import PRESET_DIR
from cemsim.errors import CemsimError

INI = """[dram_structure]
protocol = LPDDR4
bankgroups = 4
banks_per_group = 4
rows = 65536
columns = 256
device_width = 64
BL = 4
[timing]
tCK = 0.9375
CL = 12
CWL = 9
tRCD = 20
tRP = 20
tRAS = 45
[system]
channel_size = 4096
channels = 1
bus_width = 64
address_mapping = rorabachcobg
"""


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_loads_and_sources_every_number(name):
    spec = load_dram_spec(name)
    raw = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    numbers = [k for k, v in raw.items() if isinstance(v, dict) and "value" in v]
    numbers += [f"timing.{k}" for k in raw["timing"]]
    for key in numbers:
        assert key in spec.provenance, key
    assert spec.channel_peak_bytes_per_s > 0


def test_lpddr5x_preset_is_the_drex_channel():
    spec = load_dram_spec("lpddr5x-8533")
    assert spec.tck_s == pytest.approx(0.9375e-9)
    assert spec.burst_bytes == 32
    assert spec.channel_peak_bytes_per_s == pytest.approx(17.07e9, rel=1e-3)
    assert spec.timing["nRCD"] == 20 and spec.timing["nFAW"] == 22 and spec.timing["nRFC"] == 299


def test_dramsim3_ini_reads_organisation_like_dramsim3(tmp_path: Path):
    p = tmp_path / "x.ini"
    p.write_text(INI)
    spec = load_dram_spec(p)
    assert spec.ranks == 2  # 4096 MB channel / 2048 MB rank
    assert spec.columns == 64  # 256 columns / BL 4
    assert spec.burst_bytes == 32  # 64-bit bus x BL 4
    assert spec.timing["nBL"] == 2 and spec.timing["nRC"] == 65
    assert spec.timing["nRTP"] == 5  # DRAMsim3 default when the .ini has none
    assert spec.controller.name == "dramsim3"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("protocol = LPDDR4", "protocol = GDDR6"), "protocol"),
        (
            ("address_mapping = rorabachcobg", "address_mapping = rorabachcobg\nunified_queue = True"),
            "unified",
        ),
        (("CL = 12", "CL = twelve"), "CL"),
    ],
)
def test_dramsim3_ini_refuses_what_the_engine_does_not_model(tmp_path, edit, match):
    p = tmp_path / "x.ini"
    p.write_text(INI.replace(*edit))
    with pytest.raises(CemsimError, match=match):
        load_dram_spec(p)


def test_preset_number_without_source_is_refused(tmp_path):
    text = (
        (PRESET_DIR / "lpddr5x-8533.yaml")
        .read_text()
        .replace(
            'nRTRS: {value: 2, tag: spec, source: "rank switch gap 2 CK (Ramulator 2 LPDDR5 nCS)"}',
            "nRTRS: 2",
        )
    )
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(CemsimError, match="provenance"):
        load_dram_spec(p)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(CemsimError, match="lpddr5x-8533"):
        load_dram_spec("lpddr9")


@pytest.mark.parametrize(
    ("preset", "ref_file"),
    [("lpddr5-6400", "ram2_LPDDR5-6400_x16_2r.timings.json"), ("hbm3", "ram2_HBM3-6400_1ch.timings.json")],
)
def test_presets_agree_with_the_reference_ramulator_configs(preset, ref_file):
    """The presets are typed from JEDEC / Ramulator 2 preset values; the reference set's exported configs are
    an independent copy of the same numbers."""
    from tests.dram.test_reference import REF

    if not REF.is_dir():
        pytest.skip(f"reference set not found at {REF}")
    mine = load_dram_spec(preset)
    ref = load_dram_spec(REF / "configs" / ref_file)
    assert dict(mine.timing) == dict(ref.timing)
    assert mine.tck_s == pytest.approx(ref.tck_s, rel=1e-3)
    assert (mine.bankgroups, mine.banks_per_group, mine.rows, mine.columns) == (
        ref.bankgroups,
        ref.banks_per_group,
        ref.rows,
        ref.columns,
    )
    assert mine.burst_bytes == ref.burst_bytes and mine.rank_scope == ref.rank_scope


@settings(max_examples=40, deadline=None)
@given(
    bankgroups=st.sampled_from([1, 2, 4]),
    banks_per_group=st.sampled_from([2, 4]),
    rows_log2=st.integers(12, 17),
    columns=st.sampled_from([256, 512, 1024]),
    device_width=st.sampled_from([8, 16, 32]),
    bl=st.sampled_from([8, 16]),
    ranks=st.sampled_from([1, 2, 4]),
    tck=st.sampled_from(["0.625", "0.83", "1.0", "1.25"]),
    cl=st.integers(5, 40),
    trcd=st.integers(5, 40),
    trp=st.integers(5, 40),
    tras=st.integers(10, 80),
)
def test_ini_organisation_and_timing_follow_dramsim3_rules(
    tmp_path_factory, bankgroups, banks_per_group, rows_log2, columns, device_width, bl, ranks, tck, cl, trcd,
    trp, tras,
):  # fmt: skip
    """Random DDR4-style .ini files: ranks from channel_size / rank size, bursts per row = columns / BL, burst
    = bus_width / 8 * BL bytes, nRC = tRAS + tRP, timings copied (DRAMsim3 configuration.cc rules)."""
    rows = 1 << rows_log2
    bus_width = 64
    rank_mb = columns * device_width // 8 * (rows // 1024) // 1024 * bankgroups * banks_per_group
    rank_mb *= bus_width // device_width
    if rank_mb == 0:
        return
    text = f"""[dram_structure]
protocol = DDR4
bankgroups = {bankgroups}
banks_per_group = {banks_per_group}
rows = {rows}
columns = {columns}
device_width = {device_width}
BL = {bl}
[timing]
tCK = {tck}
CL = {cl}
tRCD = {trcd}
tRP = {trp}
tRAS = {tras}
[system]
channel_size = {rank_mb * ranks}
bus_width = {bus_width}
address_mapping = rochrababgco
"""
    p = tmp_path_factory.mktemp("ini") / "x.ini"
    p.write_text(text)
    spec = load_dram_spec(p)
    assert spec.ranks == ranks
    assert (spec.bankgroups, spec.banks_per_group, spec.rows) == (bankgroups, banks_per_group, rows)
    assert spec.columns == columns // bl
    assert spec.burst_bytes == bus_width // 8 * bl
    assert spec.tck_s == pytest.approx(float(tck) * 1e-9)
    t = spec.timing
    assert (t["nCL"], t["nRCD"], t["nRP"], t["nRAS"], t["nRC"], t["nBL"]) == (
        cl,
        trcd,
        trp,
        tras,
        tras + trp,
        bl // 2,
    )


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_has_sourced_read_and_write_energy(name):
    """Issue 13: energy statistics for every preset, each number sourced."""
    spec = load_dram_spec(name)
    assert spec.energy.read_j > 0 and spec.energy.write_j > 0
    energy_keys = [k for k in spec.provenance if k.startswith("energy.")]
    assert energy_keys and all(spec.provenance[k].split(":")[0] in {"spec", "derived", "assumed", "measured"}
                               for k in energy_keys)  # fmt: skip
    # a 256-bit burst at the preset's pJ/bit
    raw = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())["energy"]
    pj = float(str(raw["read_per_bit"]["value"]).split()[0])
    assert spec.energy.read_j == pytest.approx(pj * 1e-12 * 8 * spec.burst_bytes)
