"""Candidate seeds: the main line keeps the released rule, sibling branches never share seeds."""
from __future__ import annotations

import pytest

from unianimate.errors import InputError
from unianimate.seeds import SEED_MODULUS, branch_path, candidate_seed


def test_main_line_keeps_the_released_seeds() -> None:
    assert [candidate_seed(0, 0, c) for c in range(3)] == [0, 1, 2]
    assert candidate_seed(0, 1, 0, "s0/c0/s1") == 1000 and candidate_seed(7, 2, 3) == 2010


def test_sibling_branches_get_different_seeds() -> None:
    """Issue 11 #15: s1/c0 and s2/c0 were both base_seed + 1000."""
    s1 = branch_path([("s0", None), ("s1", "c0")])
    s2 = branch_path([("s0", None), ("s2", "c1")])
    s3 = branch_path([("s0", None), ("s3", "c0")])          # a second branch from the same candidate
    assert (s1, s2) == ("s0/c0/s1", "s0/c1/s2")
    seeds = {p: [candidate_seed(1000, 1, c, p, main_line=p == s1) for c in range(50)] for p in (s1, s2, s3)}
    assert seeds[s1][0] == 2000
    every = [s for v in seeds.values() for s in v]
    assert len(set(every)) == len(every)                   # no seed shared anywhere
    assert all(0 <= s < SEED_MODULUS for s in every)
    main = {candidate_seed(1000, d, c) for d in range(100) for c in range(100)}
    assert not main & set(seeds[s2] + seeds[s3])           # never among the main line's
    # deterministic: the same path always gives the same seeds (re-runs reproduce)
    assert seeds[s2] == [candidate_seed(1000, 1, c, s2, main_line=False) for c in range(50)]


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="branch path"):
        candidate_seed(0, 1, 0, main_line=False)
    with pytest.raises(InputError, match="depth"):
        candidate_seed(0, -1, 0)
    with pytest.raises(InputError, match="parent candidate"):
        branch_path([("s0", None), ("s1", None)])
