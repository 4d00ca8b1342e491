"""Data: generated scenes (and, later, dataset readers and samplers)."""
