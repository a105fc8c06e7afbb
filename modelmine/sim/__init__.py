"""Deterministic simulation of ModelMine's sans-IO protocol cores in virtual time."""
