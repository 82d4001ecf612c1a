"""The paper's tables and figures regenerated from metrics, histories and features."""
