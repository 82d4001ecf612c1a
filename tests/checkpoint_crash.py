"""Test helper shared by the engines' resume tests: a process that dies right after its first checkpoint."""

from havana.utils.checkpointing import Checkpointer


def crash_after_first_checkpoint(monkeypatch):
    """Make the first checkpoint write succeed and the process 'die' right after it (as kill -9 would)."""
    save = Checkpointer.save

    def save_then_die(self, state, where):
        save(self, state, where)
        monkeypatch.setattr(Checkpointer, "save", save)
        raise SystemExit(f"killed after {where}")

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
