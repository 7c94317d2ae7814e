"""Training steps shared by both trainers: which samples each process draws."""

import numpy as np

from im2flow2act.core.optimization import batch_indices


def test_batch_indices_are_reproducible_and_split_across_processes():
    single = batch_indices(1000, 8, seed=3, step=5)
    assert np.array_equal(single, batch_indices(1000, 8, seed=3, step=5))  # resume draws the same batch
    assert not np.array_equal(single, batch_indices(1000, 8, seed=3, step=6))
    two = [batch_indices(1000, 8, seed=3, step=5, rank=r, processes=2) for r in range(2)]
    assert np.array_equal(two[0], single)  # process 0 gets what a single-process run gets
    assert not np.array_equal(two[0], two[1])  # the other process trains on other samples
    assert all(len(part) == 8 and part.max() < 1000 for part in two)
