"""Label budgets: seeded, stratified, nested labelled-train subsets (images per class).

A *budget* is a number of labelled images per class (``None`` = every image). For a train
split's integer labels, :func:`budget_indices` returns, per budget, the sorted ``int64``
indices of the labelled subset:

* **stratified** – each class contributes exactly ``min(budget, count_of_class)`` images.
  A class with fewer images than the budget gives all of them: the budget is *capped* for
  that class. This is never silent: :func:`capped_classes` lists, per budget, the classes
  that were capped and their counts, and :func:`describe_budgets` records them (and the
  per-class min/max) in the manifest entry.
* **nested** – for one seed, the subset of a smaller budget is contained in the subset of
  any larger one: each class is put in ONE seeded random order and every budget takes a
  prefix of that order.
* **seeded** – a function of ``(labels, seed)`` only: independent of which other budgets
  are asked for and of their order, so ``[10]`` alone and ``[100, 10]`` give the same
  10-per-class subset. A scratch and a fine-tune run with the same seed therefore see the
  same labelled images (a paired design); another seed gives another subset.

Seeding scheme (deterministic across runs, platforms and NumPy versions): for each class
``c`` present in ``labels`` (ascending), take that class's indices in ascending order,
draw one raw 64-bit word per image from ``PCG64(SeedSequence([seed, c]))`` and order the
images by (word, index) with a stable sort. Only the bit generator's raw stream is used
(``random_raw``), which NumPy keeps stable across versions; ``Generator`` methods such as
``permutation`` carry no such promise. Changing this scheme changes every budget subset;
``tests/data/test_budgets.py`` pins a few expected indices so that it is noticed.

Budget lists: each budget is a positive int or ``None``; an empty list or a duplicate
(e.g. ``[10, 10]`` or ``[None, None]``) is refused with :class:`DataError` rather than
deduplicated, since a repeated budget in a config is most likely a typo. Order does not
matter. Budget names (``budget_name``/``parse_budget``) are ``"all"`` for ``None`` and the
decimal integer otherwise, for use in file and stage names.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from ..errors import DataError

__all__ = [
    "budget_indices",
    "budget_name",
    "capped_classes",
    "class_orders",
    "describe_budgets",
    "parse_budget",
]

Budget = int | None


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"budget labels must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"budget labels must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise DataError("budget labels are empty: the train split has no images")
    if arr.min() < 0:
        raise DataError(f"budget labels must be non-negative class ids, got {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"budget seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_budget(budget: object) -> Budget:
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise DataError(f"budget must be a positive int or None (all), got {budget!r}")
    if budget <= 0:
        raise DataError(f"budget must be a positive int or None (all), got {int(budget)}")
    return int(budget)


def _check_budgets(budgets: Sequence[Budget]) -> list[Budget]:
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence):
        raise DataError(f"budgets must be a list of positive ints or None, got {budgets!r}")
    if len(budgets) == 0:
        raise DataError("budgets list is empty")
    checked = [_check_budget(b) for b in budgets]
    seen: set[Budget] = set()
    for b in checked:
        if b in seen:
            raise DataError(f"budget {budget_name(b)} is listed more than once in {list(budgets)!r}")
        seen.add(b)
    return checked


def class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Per class (ascending), that class's indices in their seeded random order (int64).

    Every budget takes a prefix of each order; see the module docstring for the scheme.
    """
    arr = _check_labels(labels)
    seed = _check_seed(seed)
    orders: dict[int, np.ndarray] = {}
    for c in np.unique(arr):
        c = int(c)
        idx = np.flatnonzero(arr == c).astype(np.int64)
        keys = np.random.PCG64(np.random.SeedSequence([seed, c])).random_raw(idx.size)
        orders[c] = idx[np.argsort(keys, kind="stable")]
    return orders


def budget_indices(
    labels: np.ndarray, budgets: Sequence[Budget], seed: int
) -> dict[Budget, np.ndarray]:
    """Sorted int64 indices of the labelled subset for each budget (images per class).

    Each class contributes ``min(budget, its count)`` images (``None``: all of them); use
    :func:`capped_classes` or :func:`describe_budgets` to see where a budget was capped.
    Subsets are nested across budgets and depend only on ``(labels, seed)``. Raises
    :class:`DataError` for bad labels, a bad seed, or a bad/duplicate/empty budget list.
    """
    checked = _check_budgets(budgets)
    orders = class_orders(labels, seed)
    out: dict[Budget, np.ndarray] = {}
    for b in checked:
        parts = [order if b is None else order[:b] for order in orders.values()]
        out[b] = np.sort(np.concatenate(parts)).astype(np.int64, copy=False)
    return out


def capped_classes(labels: np.ndarray, budget: Budget) -> dict[int, int]:
    """Classes with fewer images than ``budget`` -> their image count (all of which are taken).

    Empty for ``None`` (all) and for a budget every class can meet.
    """
    arr = _check_labels(labels)
    b = _check_budget(budget)
    if b is None:
        return {}
    classes, counts = np.unique(arr, return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts) if n < b}


def describe_budgets(labels: np.ndarray, subsets: dict[Budget, np.ndarray]) -> dict:
    """A manifest entry per budget name: totals, per-class min/max and capped classes.

    ``{"10": {"budget": 10, "images": 100, "per_class_min": 10, "per_class_max": 10,
    "capped_classes": {}}, "all": {...}}``; ``capped_classes`` maps a class id (as a
    string, for JSON/YAML) to its count where that count was below the budget.
    """
    arr = _check_labels(labels)
    classes = np.unique(arr)
    out: dict[str, dict] = {}
    for budget in sorted(subsets, key=lambda b: (b is None, b or 0)):
        b = _check_budget(budget)
        idx = np.asarray(subsets[budget])
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise DataError(f"budget {budget_name(b)} subset must be 1-D int indices")
        if idx.size and (idx.min() < 0 or idx.max() >= arr.size):
            raise DataError(
                f"budget {budget_name(b)} subset has indices outside 0..{arr.size - 1}"
            )
        per_class = np.array([np.count_nonzero(arr[idx] == c) for c in classes])
        out[budget_name(b)] = {
            "budget": b,
            "images": int(idx.size),
            "per_class_min": int(per_class.min()),
            "per_class_max": int(per_class.max()),
            "capped_classes": {str(c): n for c, n in capped_classes(arr, b).items()},
        }
    return out


def budget_name(budget: Budget) -> str:
    """``"all"`` for ``None``, else the budget as a decimal string (for file/stage names)."""
    b = _check_budget(budget)
    return "all" if b is None else str(b)


def parse_budget(name: str) -> Budget:
    """Inverse of :func:`budget_name`: ``"all"`` -> ``None``, ``"10"`` -> ``10``.

    Only canonical names are accepted (no sign, spaces or leading zeros), so that
    ``budget_name(parse_budget(s)) == s``.
    """
    if not isinstance(name, str):
        raise DataError(f"budget name must be a string, got {name!r}")
    if name == "all":
        return None
    if not name.isascii() or not name.isdigit() or str(int(name)) != name or int(name) <= 0:
        raise DataError(f"budget name must be 'all' or a positive integer, got {name!r}")
    return int(name)
