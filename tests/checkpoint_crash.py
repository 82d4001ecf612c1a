"""Test helper shared by the engines' in-process resume tests: training that stops right after its first checkpoint.

The stop is a SystemExit raised inside the training loop, so every `finally` and context-manager exit still runs; a
real kill allows none of that. The real thing is tested in a process of its own stopped by SIGKILL or SIGTERM:
test_a_real_process_stopped_by_a_signal_resumes_bit_identically in tests/test_train_head.py and
tests/test_train_extractor.py.
"""

from havana.utils.checkpointing import Checkpointer


def crash_after_first_checkpoint(monkeypatch):
    """Make the first checkpoint write succeed and raise SystemExit right after it (cleanup still runs)."""
    save = Checkpointer.save

    def save_then_die(self, state, where):
        save(self, state, where)
        monkeypatch.setattr(Checkpointer, "save", save)
        raise SystemExit(f"killed after {where}")

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
