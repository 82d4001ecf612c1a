"""Infrastructure every layer above may use: atomic writes, checkpoints, devices, path safety, progress, provenance,
seeding, torch I/O and MLflow tracking."""
