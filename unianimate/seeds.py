"""Candidate seeds of the segment tree, as one pure rule (no studio, no torch).

The released rule ``seed = base_seed + 1000 * depth + candidate_index`` gives sibling branches
the same seeds: ``s1/c0`` and ``s2/c0`` (two segments at depth 1, continued from different
candidates of the root) both got ``base_seed + 1000``, so a branch re-ran its sibling's noise.

The rule here:
- the **main line** - the first segment made at each depth (the root, and the chain a headless
  run builds) - keeps the released seeds, so CLI runs and documented examples do not change;
- every **other** segment adds an offset derived from its branch path (SHA-256 of
  ``"s0/c1/s2"``: the segment ids from the root with the candidate each one continued from), at
  least ``10**7`` and wrapped into ``[0, 2**31)``, so siblings get different seeds (two paths
  collide with probability ~ 2**-31) that never fall among the main line's;
- ``candidate_index`` keeps counting across re-rolls, so seeds never repeat within a segment.

Seeds already stored in a project are used as stored (re-render and old projects reproduce
exactly); the rule only decides the seeds of new candidates.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

from unianimate.errors import InputError

SEED_DEPTH_STRIDE = 1000
SEED_MODULUS = 2 ** 31
BRANCH_OFFSET_MIN = 10 ** 7


def branch_path(chain: Sequence[tuple[str, str | None]]) -> str:
    """``[(segment_id, parent_candidate_id), ...]`` from the root down to a segment (the root's
    parent candidate is None) -> ``"s0/c1/s2"``."""
    parts: list[str] = []
    for i, (segment, parent_candidate) in enumerate(chain):
        if i > 0:
            if not parent_candidate:
                raise InputError(f"segment {segment!r} has no parent candidate in the branch path")
            parts.append(str(parent_candidate))
        parts.append(str(segment))
    return "/".join(parts)


def branch_offset(path: str) -> int:
    """The seed offset of a non-main-line segment with branch ``path``: in
    ``[BRANCH_OFFSET_MIN, SEED_MODULUS - BRANCH_OFFSET_MIN)``."""
    h = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big")
    return BRANCH_OFFSET_MIN + h % (SEED_MODULUS - 2 * BRANCH_OFFSET_MIN)


def candidate_seed(base_seed: int, depth: int, candidate_index: int, path: str = "",
                   main_line: bool = True) -> int:
    """The seed of candidate ``candidate_index`` of a segment at ``depth`` (module docstring):
    ``base_seed + 1000 * depth + candidate_index`` on the main line, plus
    :func:`branch_offset` of ``path`` (mod 2**31) elsewhere."""
    for name, v in (("base_seed", base_seed), ("depth", depth), ("candidate_index", candidate_index)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"{name} must be a whole number >= 0, got {v!r}")
    seed = int(base_seed) + SEED_DEPTH_STRIDE * int(depth) + int(candidate_index)
    if main_line:
        return seed
    if not path:
        raise InputError("a segment off the main line needs its branch path for its seed")
    return (seed + branch_offset(path)) % SEED_MODULUS
