"""PKSampler guarantees: P distinct ids × K own indices per batch, every id seen each epoch, seeded per (seed,
epoch)."""

from collections import Counter

import pytest
import torch

from havana.data.sampler import PKSampler
from havana.errors import HavanaError

# 13 identities with 1..9 images each (several below K=4), indices interleaved so ids are not contiguous.
COUNTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 3, 12, 2]
PIDS = [pid for round_ in range(max(COUNTS)) for pid, n in enumerate(COUNTS) if round_ < n]


def _check_batch(batch, p, k):
    ids = [PIDS[i] for i in batch]
    per_id = Counter(ids)
    assert len(batch) == p * k
    assert len(per_id) == p and set(per_id.values()) == {k}
    # the K indices of one id are consecutive in the batch
    assert all(len(set(ids[j : j + k])) == 1 for j in range(0, p * k, k))


@pytest.mark.parametrize("p,k", [(4, 4), (3, 2), (13, 1), (5, 3)])
def test_every_batch_has_p_ids_times_k_and_no_id_is_starved(p, k):
    sampler = PKSampler(PIDS, p=p, k=k, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) > 0
        for batch in batches:
            _check_batch(batch, p, k)
        assert {PIDS[i] for b in batches for i in b} == set(range(len(COUNTS)))


def test_ids_with_enough_images_never_repeat_an_index_outside_the_padded_batch():
    sampler = PKSampler(PIDS, p=4, k=4, seed=0)
    batches = list(sampler)
    seen = Counter(i for b in batches[:-1] for i in b if COUNTS[PIDS[i]] >= 4)
    assert max(seen.values()) == 1


def test_deterministic_for_seed_and_epoch_and_different_across_epochs():
    a, b = PKSampler(PIDS, p=4, k=4, seed=7), PKSampler(PIDS, p=4, k=4, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(PKSampler(PIDS, p=4, k=4, seed=8)) != list(PKSampler(PIDS, p=4, k=4, seed=7))


def test_works_as_dataloader_batch_sampler():
    data = torch.utils.data.TensorDataset(torch.tensor(PIDS))
    sampler = PKSampler(PIDS, p=3, k=4, seed=1)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    for (pids,), batch in zip(loader, sampler):
        assert pids.tolist() == [PIDS[i] for i in batch]


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(HavanaError, match="at least p=20 identities"):
        PKSampler(PIDS, p=20, k=4)
