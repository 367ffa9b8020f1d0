"""Recipe: screen a system → trial structures → CHGNet pre-relax → atomate2 VASP double relax.

    # inspect: build the flow and write the VASP inputs of one candidate (POTCAR.spec, no POTCARs needed)
    python workflows/screen_chgnet_vasp.py Li-Fe-P-O --write-inputs ./vasp_inputs
    # submit to FireWorks (MongoDB LaunchPad) or jobflow-remote
    python workflows/screen_chgnet_vasp.py Li-Fe-P-O --backend fireworks --launchpad my_launchpad.yaml
    python workflows/screen_chgnet_vasp.py Li-Fe-P-O --backend jobflow-remote --worker my_cluster

The VASP jobs are added at run time (``Response(addition=...)``) for the lowest-CHGNet-energy
structure of each selected composition; their outputs land in the same JobStore.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobflow import Flow


def build(chemsys: str, top_n: int = 5, max_atoms: int = 12, n_structures: int = 3, max_sites: int = 24,
          relax_steps: int = 500, dft_maker=None, model: str | None = None, reference_store=None) -> Flow:
    """prescreen → structures → CHGNet → VASP (``dft_maker``, default atomate2 ``DoubleRelaxMaker``)."""
    from fh_screen.jobs import (
        HandoffMaker,
        PrescreenMaker,
        PrescreenToDFTMaker,
        StructureMaker,
        chgnet_prerelax_maker,
        default_dft_maker,
    )

    maker = PrescreenToDFTMaker(
        name="fh-screen → CHGNet → VASP",
        prescreen_maker=PrescreenMaker(model=model, top_n=top_n, reference_store=reference_store,
                                       screen_options={"max_atoms": max_atoms, "charge_neutral": True}),
        structure_maker=StructureMaker(n_structures=n_structures, max_sites=max_sites),
        handoff_maker=HandoffMaker(dft_maker=dft_maker or default_dft_maker(),
                                   prerelax_maker=chgnet_prerelax_maker(steps=relax_steps)),
    )
    return maker.make(chemsys)


def write_vasp_inputs(structure, directory: str | Path, dft_maker=None) -> list[Path]:
    """Write the inputs of every VASP job ``dft_maker`` makes for ``structure`` (POTCAR.spec only).

    Jobs that start from a previous job's output are written for ``structure`` too.
    """
    from fh_screen.jobs import default_dft_maker

    made = (dft_maker or default_dft_maker()).make(structure)
    jobs = [made] if not hasattr(made, "jobs") else [j for j, _ in made.iterflow()]
    written = []
    for i, job in enumerate(jobs, start=1):
        maker = getattr(job.function, "__self__", None)
        generator = getattr(maker, "input_set_generator", None)
        if generator is None:
            continue
        target = Path(directory) / f"{i:02d}_{job.name.replace(' ', '_')}"
        generator.get_input_set(structure, potcar_spec=True).write_input(target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chemsys")
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument("--backend", choices=["none", "fireworks", "jobflow-remote"], default="none")
    parser.add_argument("--launchpad", default=None, help="FireWorks LaunchPad YAML")
    parser.add_argument("--worker", default=None, help="jobflow-remote worker")
    parser.add_argument("--write-inputs", default=None, help="folder for the VASP inputs of the best candidate")
    args = parser.parse_args(argv)

    flow = build(args.chemsys, top_n=args.top_n)
    print(flow.graph_to_mermaid() if hasattr(flow, "graph_to_mermaid") else flow)
    if args.write_inputs:
        from fh_screen.jobs import PrescreenMaker
        from fh_screen.jobs.structures import make_structures

        selection = PrescreenMaker(top_n=1, save_screen=False).prescreen(args.chemsys)
        made = make_structures(selection.selected_formulas, n_structures=1)
        for candidate in made.structures:
            for path in write_vasp_inputs(candidate.structure, args.write_inputs):
                print(f"wrote {path}")
    if args.backend != "none":
        from fh_screen.jobs.submit import run_flow

        print(run_flow(flow, args.backend, launchpad_file=args.launchpad, worker=args.worker))


if __name__ == "__main__":
    main()
