"""What every stage CLI shares: logging, params loading, and clear one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import FinetuneRecipe, Params, load_params
from ..errors import USER_ERRORS  # errors a user can fix from the message: no traceback, exit 2
from ..layout import pretrained_file


def stage_main(
    description: str, add_args: Callable[[argparse.ArgumentParser], None],
    run: Callable[[Params, argparse.Namespace], object],
) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    add_args(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(load_params(args.params), args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def pretrained_weights(given: str | None, recipe: FinetuneRecipe) -> Path:
    """The weights a fine-tune variant starts from: ``--pretrained`` when given, else
    ``models/pretrained/<its pretrained>/model.safetensors``."""
    return Path(given) if given else pretrained_file(recipe.pretrained)
