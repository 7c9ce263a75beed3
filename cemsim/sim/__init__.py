"""SimPy model of GPU + HBM, DReX CEM (PFUs, NMAs), interconnect and host memory, replaying traces.

Public API (what `cemsim run` and sweeps call):

    from cemsim.sim import prepare, simulate
    from cemsim.sim.analytic import analytic
    prep = prepare(system, header, steps, context=None, batch=None, max_steps=None, where="trace")
    des = simulate(prep, steps=None, timeline=False, progress=None)   # discrete-event model
    estimate = analytic(prep, steps=None)                             # closed-form model (its own module)
    des.to_json_dict()                                                # the `cemsim run --json` object

Modules: one per component (gpu, hbm, cem, link, host_memory), registry (sim classes by (component, impl)),
system (build + wire), plan / work (what each step asks of each component), replay (the SimPy processes),
capacity, energy, result, analytic, timeline (Perfetto), output (run directory). This package exports no
name that shadows a submodule: ``cemsim.sim.analytic`` is always the module.
"""

from cemsim.sim.result import SimResult
from cemsim.sim.simulate import Prepared, prepare, simulate

__all__ = ["Prepared", "SimResult", "prepare", "simulate"]
