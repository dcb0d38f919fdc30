"""Supervised engine processes and (next) the scheduler that decides what runs where."""
