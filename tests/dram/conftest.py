"""A small device with distinct round timings, so hand-calculated expectations are easy to follow."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cemsim.dram import ControllerProfile, DramSpec

TOY_TIMING = {
    "nBL": 2, "nCL": 10, "nCWL": 5, "nRCD": 7, "nRCDWR": 7, "nRP": 6, "nRPab": 8, "nRAS": 15, "nRC": 21,
    "nRRD_S": 3, "nRRD_L": 5, "nFAW": 20, "nCCD_S": 2, "nCCD_L": 4, "nCCD_L_WR": 4, "nRTP": 3, "nWR": 6,
    "nWTR_S": 2, "nWTR_L": 4, "nRTRS": 1, "nPPD": 0, "nRFC": 50, "nRFCpb": 25, "nREFI": 1000,
    "nREFIpb": 125, "nPBR2PBR": 0, "nPBR2ACT": 0, "nAAD": 0, "nWCKPST": 0, "nCMD_ACT": 1, "nCMD_CAS": 1,
}  # fmt: skip


def toy_spec(refresh: str = "none", row_policy: str = "open", **timing: int) -> DramSpec:
    prof = ControllerProfile(name="toy", queue="shared", refresh=refresh, row_policy=row_policy)
    return DramSpec(
        name="toy",
        tck_s=1e-9,
        burst_bytes=32,
        ranks=2,
        bankgroups=2,
        banks_per_group=4,
        rows=1024,
        columns=64,
        timing={**TOY_TIMING, **timing},
        mapping="rorabgbacoch",
        controller=prof,
    )


@pytest.fixture
def toy():
    return toy_spec()


__all__ = ["replace", "toy_spec"]
