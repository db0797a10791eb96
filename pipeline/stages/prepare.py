"""Stage ``prepare``: raw dataset (downloaded with checksum checks, or found locally) ->
compact uint8 arrays for train and val in ``--out`` and for test in ``--test``, each dir with its
``manifest.json``: the training stages depend on the first alone and never open the test split.

    python -m pipeline.stages.prepare --raw data/raw --out data/prepared --test data/test
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import Params
from ..data import load_raw, prepare_dataset
from ..layout import DATA_RAW, PREPARED, TEST
from ._cli import stage_main

log = logging.getLogger("prepare")


def run(params: Params, args: argparse.Namespace) -> dict:
    p = params.prepare
    raw = load_raw(params.base.dataset, Path(args.raw), download=p.download)
    manifest = prepare_dataset(
        raw, Path(args.out), val_fraction=p.val_fraction, seed=params.base.seed,
        max_train=p.max_train, max_test=p.max_test, test_dir=Path(args.test),
    )
    log.info("prepared %s into %s: %s; its test split into %s", params.base.dataset, args.out,
             manifest["counts"], args.test)
    return manifest


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", default=str(DATA_RAW), help="downloads / raw files")
    parser.add_argument("--out", default=str(PREPARED), help="train and val arrays + manifest")
    parser.add_argument("--test", default=str(TEST), help="test arrays + manifest")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
