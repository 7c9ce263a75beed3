"""Loading systems: presets + overrides, provenance, units, and every kind of bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cemsim.config.loader import PRESET_DIR, TAGS, ConfigError, load_system
from cemsim.config.yaml_lines import load_with_lines

REPO = Path(__file__).resolve().parents[2]
HWCONFIGS = sorted((REPO / "hwconfigs").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "sys.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


GOOD = """
name: t
kv_location: cem
gpu:
  preset: h100-sxm
cem:
  preset: drex
link:
  preset: cxl2-x16
workload:
  model: llama3-8b
  context: 128K
"""


def test_shipped_hwconfigs_exist_and_load() -> None:
    names = {p.stem for p in HWCONFIGS}
    assert {"h100", "h100x2", "h100-host-offload", "h100-sparse-hbm", "h100-drex"} <= names
    for p in HWCONFIGS:
        lc = load_system(p)
        assert lc.system.name == p.stem
        assert p.read_text().startswith("#"), f"{p} must open with a comment saying what it describes"


def test_every_preset_number_has_a_source_and_tag() -> None:
    for preset in PRESET_DIR.rglob("*.yaml"):
        data, _ = load_with_lines(preset)

        def walk(node: object, path: str, preset: Path = preset) -> None:
            if isinstance(node, dict) and "value" in node:
                assert node.get("tag") in TAGS, f"{preset}:{path} has tag {node.get('tag')!r}"
                assert node.get("source"), f"{preset}:{path} has no source"
            elif isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{path}.{k}")
            else:
                assert isinstance(node, str | bool) and not str(node)[:1].isdigit(), (
                    f"{preset}:{path} = {node!r} is a number without a source"
                )

        walk(data, "")


def test_every_number_of_a_shipped_system_is_sourced() -> None:
    for p in HWCONFIGS:
        lc = load_system(p)
        for path, prov in lc.provenance.items():
            if path.startswith(("workload.", "simulation.")) or path == "gpu.count":
                continue  # choices of the experiment, not facts about hardware
            assert prov.tag in TAGS, f"{p.name}: {path} is {prov.tag} ({prov.source})"


def test_derived_figures_match_the_published_drex_totals() -> None:
    lc = load_system(REPO / "hwconfigs" / "h100-drex.yaml")
    d = lc.to_json_dict()["derived"]
    assert d["cem.pfu_count"] == 8192
    assert d["cem.nma_count"] == 8
    assert d["cem.capacity_bytes"] == 512e9
    assert d["cem.nma_flops"] == pytest.approx(26.11e12, rel=1e-3)  # DReX: 26.11 TFLOP/s
    assert d["cem.nma_bandwidth_bytes_per_s"] == pytest.approx(1.088e12)  # 8 x 136 GB/s
    assert d["cem.pfu_bandwidth_bytes_per_s"] == pytest.approx(104.86e12, rel=1e-3)  # DReX: 104.9 TB/s
    assert d["cem.scratchpad_addresses"] == 524288
    assert d["cem.slice_keys"] == 131072
    assert d["gpu.hbm_capacity_bytes"] == 80e9
    assert d["gpu.hbm_bandwidth_bytes_per_s"] == 3.35e12


def test_preset_values_are_si_and_overrides_win(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "  batch: 4\n")
    lc = load_system(p, overrides={"link.bandwidth_per_direction": "128 GB/s", "cem.packages": 4})
    s = lc.system
    assert s.link.bandwidth_per_direction == 128e9
    assert s.cem.packages == 4
    assert s.cem.pfu.bitmap_time_per_dim == pytest.approx(1.25e-9)
    assert s.workload.context == 131072 and s.workload.batch == 4
    assert lc.provenance["link.bandwidth_per_direction"].tag == "setting"
    assert lc.provenance["cem.pfu.bitmap_time_per_dim"].tag == "spec"
    assert lc.provenance["cem.pfu.bitmap_time_per_dim"].line is not None


def test_file_override_of_a_preset_value_is_tagged_as_a_setting(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("  preset: cxl2-x16", "  preset: cxl2-x16\n  latency: 300 ns"))
    lc = load_system(p)
    assert lc.system.link.latency == pytest.approx(300e-9)
    prov = lc.provenance["link.latency"]
    assert prov.tag == "setting" and prov.file == str(p) and prov.line == 9


def test_base_inherits_and_overrides(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "base.yaml")
    child = write(tmp_path, "base: base.yaml\nname: child\nworkload:\n  batch: 8\n", "child.yaml")
    s = load_system(child).system
    assert s.name == "child" and s.workload.batch == 8 and s.workload.model == "llama3-8b"


def test_hf_config_json_gives_a_geometry(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(
        '{"num_attention_heads": 16, "num_key_value_heads": 4, "num_hidden_layers": 2, "hidden_size": 256,'
        ' "intermediate_size": 512, "vocab_size": 1000, "_name_or_path": "tiny"}'
    )
    p = write(tmp_path, GOOD.replace("model: llama3-8b", "model: m"))
    g = load_system(p).system.geometry
    assert (g.layers, g.q_heads, g.kv_heads, g.head_dim) == (2, 16, 4, 16)


def problems_of(path: Path, **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_system(path, **kw)
    return str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    msg = problems_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "no such file" in msg


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "name: t\ngpu:\n  preset: [h100\n")
    msg = problems_of(p)
    assert "sys.yaml" in msg and "line" in msg and "malformed YAML" in msg


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "name: again\n")
    assert "duplicate key 'name'" in problems_of(p)


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("  preset: drex", "  preset: drex\n  pakages: 4"))
    msg = problems_of(p)
    assert "line 7" in msg and "cem.pakages" in msg and "did you mean 'packages'" in msg


def test_nested_unknown_key_suggests(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        GOOD.replace("  preset: drex", "  preset: drex\n  pfu:\n    bitmap_time_per_dimension: 2 ns"),
    )
    msg = problems_of(p)
    assert "cem.pfu.bitmap_time_per_dimension" in msg and "did you mean 'bitmap_time_per_dim'" in msg


def test_wrong_unit_names_field_and_line(tmp_path: Path) -> None:
    p = write(
        tmp_path, GOOD.replace("  preset: cxl2-x16", "  preset: cxl2-x16\n  bandwidth_per_direction: 63 GB")
    )
    msg = problems_of(p)
    assert "line 9" in msg and "link.bandwidth_per_direction" in msg and "is a size in bytes" in msg


def test_missing_unit(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("  preset: cxl2-x16", "  preset: cxl2-x16\n  latency: 250"))
    msg = problems_of(p)
    assert "link.latency" in msg and "has no unit" in msg


@pytest.mark.parametrize("value", ["0 GB/s", "-5 GB/s"])
def test_zero_or_negative_bandwidth(tmp_path: Path, value: str) -> None:
    p = write(
        tmp_path,
        GOOD.replace("  preset: cxl2-x16", f"  preset: cxl2-x16\n  bandwidth_per_direction: {value}"),
    )
    msg = problems_of(p)
    assert "link.bandwidth_per_direction" in msg and "greater than zero" in msg


def test_zero_capacity(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("  preset: h100-sxm", "  preset: h100-sxm\n  hbm:\n    capacity: 0 GB"))
    assert "gpu.hbm.capacity" in problems_of(p)


def test_unknown_impl_lists_valid_ones(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("  preset: cxl2-x16", "  preset: cxl2-x16\n  impl: cxxl"))
    msg = problems_of(p)
    assert "unknown impl 'cxxl'" in msg and "cxl, nvlink, pcie" in msg and "did you mean 'cxl'" in msg


def test_unknown_preset_lists_available(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("preset: drex", "preset: drx"))
    msg = problems_of(p)
    assert "unknown cem preset 'drx'" in msg and "drex" in msg and "line 6" in msg


def test_unknown_model(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("llama3-8b", "llama9"))
    msg = problems_of(p)
    assert "workload.model" in msg and "llama3-1b" in msg


def test_kv_location_needs_its_parts(tmp_path: Path) -> None:
    p = write(tmp_path, "name: t\nkv_location: cem\ngpu: {preset: h100-sxm}\nworkload: {model: llama3-8b}\n")
    assert "needs a 'cem' device" in problems_of(p)


def test_bad_token_count(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("context: 128K", "context: lots"))
    assert "workload.context" in problems_of(p)


def test_all_problems_reported_together(tmp_path: Path) -> None:
    p = write(
        tmp_path, GOOD.replace("  preset: cxl2-x16", "  preset: cxl2-x16\n  latency: 250\n  lattency: 1 ns")
    )
    msg = problems_of(p)
    assert "2 problems" in msg and "link.latency" in msg and "link.lattency" in msg
