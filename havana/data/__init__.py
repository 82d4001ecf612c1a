"""Datasets: the registry and manifests, archive acquisition, the synthetic dataset, P×K sampling and transforms."""
