"""Networks: the baseline re-ID extractors and the HAVANA head."""
