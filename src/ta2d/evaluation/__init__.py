"""Trained runs -> test-split metrics per validation scheme, tables and plots (rule evaluate)."""
