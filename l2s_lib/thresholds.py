"""The compendium's reading of the paper's headline claim, in one place below every user of it.

"Keeps accuracy": at most ``ACC_TOL`` points of accuracy below System 2; "much shorter": answers at least
``MIN_SHORTENING`` percent shorter than System 2's. Chosen before looking at any organism result; used by the
study verdicts (``l2s_lib.studies.claims``) and the organism ladder report (``l2s_lib.organisms.report``).
"""

ACC_TOL = 5.0  # points of mean accuracy below System 2 that still count as "keeps accuracy"
MIN_SHORTENING = 30.0  # % shorter than System 2 that counts as "much shorter"
