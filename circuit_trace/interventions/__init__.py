"""Ablate, steer, clamp and swap features and supernodes in the real model (constrained and free
modes), generation under edits, and validation of a graph's predictions against interventions."""
