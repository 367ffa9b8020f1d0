"""Put an fh-screen prescreen ahead of an atomate2 workflow you already have.

    python examples/insert_prescreen.py Li-Fe-O

Give the *maker* of your workflow (``ElasticMaker()``, ``DoubleRelaxMaker()``, your own ...): it is
called on the best structure of each selected composition. The result is an ordinary jobflow
Flow whose jobs keep their makers, so jobflow/atomate2 powerups tune it after it is built. Run it
with ``run_locally``, or submit it with FireWorks (``flow_to_workflow``) or jobflow-remote.
Nothing here runs VASP: the script prints the flows.
"""

from __future__ import annotations

import sys

from fh_screen.jobs import PrescreenMaker, chgnet_prerelax_maker, insert_prescreen


def main(chemsys: str = "Li-Fe-O"):
    """Build the two flows; returns them."""
    from atomate2.vasp.flows.core import DoubleRelaxMaker
    from atomate2.vasp.flows.elastic import ElasticMaker

    # 1. DFT relaxations of the CHGNet-pre-relaxed best structure of each of the top 3 compositions
    relax = insert_prescreen(
        DoubleRelaxMaker(),
        chemsys,
        prescreen_maker=PrescreenMaker(top_n=3),
        prerelax_maker=chgnet_prerelax_maker(),
    )
    # 2. elastic constants instead; then powerups on the built flow: fewer candidates, fewer CHGNet steps
    elastic = insert_prescreen(ElasticMaker(), chemsys, prerelax_maker=chgnet_prerelax_maker())
    for flow in (relax, elastic):
        flow.update_maker_kwargs({"top_n": 2}, class_filter=PrescreenMaker)
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    elastic.update_maker_kwargs({"steps": 200}, class_filter=ForceFieldRelaxMaker)
    for flow in (relax, elastic):
        print(flow.name)
        for job in flow.jobs:
            print(f"  {job.name}: {type(job.maker).__name__}")
    return relax, elastic


if __name__ == "__main__":
    main(*sys.argv[1:2])
