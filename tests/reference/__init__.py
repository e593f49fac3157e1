"""Differential test of vlpt's methods against the reference implementations (see conftest.py)."""
