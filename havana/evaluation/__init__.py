"""Evaluation: distances, the Market-1501 ranking protocol (CMC, mAP, mINP), k-reciprocal re-ranking, scoring a
feature file or head."""
