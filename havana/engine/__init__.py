"""Engines: train an extractor, extract features, train heads (checkpointed, resumable, seeded)."""
