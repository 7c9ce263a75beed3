"""The select's bulk-copied signs (LS_SIGN_BULK=1, a build variant) need every select and band kernel at the same
shared-memory carveout (docs/gpu-kernels.md, seventeenth step): match_carveout sets it on exactly the functions
given, and only for such a build. CPU: stand-in functions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cemsim.gpu.fused import match_carveout, module_int


@pytest.mark.parametrize("bulk", [0, 1])
def test_carveout_follows_the_builds_flag(bulk: int) -> None:
    given = [SimpleNamespace(name=n) for n in ("ls_attn_d128_g4_c64", "ls_select2_r16_popc_w2")]
    match_carveout(given, bulk)
    for f in given:
        assert getattr(f, "preferred_shared_memory_carveout", None) == (100 if bulk else None)


class NoGlobals:
    def get_global(self, name: str):
        raise KeyError(name)


def test_a_build_without_the_flag_reads_as_missing() -> None:
    """An earlier source (bench --source) has no ls_sign_bulk: it reads as 0 (the loads); a global the host
    needs, such as ls_block_keys, raises instead of being guessed."""
    assert module_int(NoGlobals(), "ls_sign_bulk", missing=0) == 0
    with pytest.raises(KeyError):
        module_int(NoGlobals(), "ls_block_keys")
