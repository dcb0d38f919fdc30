"""Fit: the memory estimator and the Smart Auto planner."""
