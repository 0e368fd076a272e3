"""Analyses of weights (task vectors) that the studies plot."""
