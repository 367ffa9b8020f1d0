"""Put an fh-screen prescreen ahead of an atomate2 workflow you already have.

    python examples/insert_prescreen.py Li-Fe-O

Two ways, one call each:

* give the *maker* (``ElasticMaker()``, ``DoubleRelaxMaker()``, your own ...): it is called on
  the best structure of each selected composition;
* give a *flow already built* for some structure: it is used as a template, copied for each
  selected composition with the structure swapped in.

The result is an ordinary jobflow Flow: run it with ``run_locally``, or submit it with FireWorks
(``flow_to_workflow``) or jobflow-remote. Nothing here runs VASP: the script prints the flow.
"""

from __future__ import annotations

import sys

from pymatgen.core import Lattice, Structure

from fh_screen.jobs import PrescreenMaker, chgnet_prerelax_maker, insert_prescreen


def main(chemsys: str = "Li-Fe-O") -> None:
    from atomate2.vasp.flows.core import DoubleRelaxMaker

    # 1. a maker: DFT runs on the CHGNet-pre-relaxed best structure of each of the top 3 compositions
    flow = insert_prescreen(
        DoubleRelaxMaker(),
        chemsys,
        prescreen_maker=PrescreenMaker(top_n=3),
        prerelax_maker=chgnet_prerelax_maker(),
    )
    print(flow)

    # 2. a flow you already built (here for rock-salt LiF): it becomes a template
    lif = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.05), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    my_flow = DoubleRelaxMaker().make(lif)
    flow = insert_prescreen(my_flow, chemsys, prescreen_maker=PrescreenMaker(top_n=3))
    print(flow)


if __name__ == "__main__":
    main(*sys.argv[1:2])
