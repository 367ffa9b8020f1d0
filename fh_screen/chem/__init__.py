"""Chemistry without models: the bottom layer of fh-screen.

Owns the formula grammar and element order (:mod:`~fh_screen.chem.formula`), candidate
enumeration of a chemical system (:mod:`~fh_screen.chem.candidates`), oxidation states and
charge balance (:mod:`~fh_screen.chem.oxidation`) and the convex hull of formation enthalpies
(:mod:`~fh_screen.chem.hull`).

May import: :mod:`fh_screen.errors` and third-party libraries (numpy, scipy, pymatgen) only;
nothing else of fh-screen imports below it.
"""
