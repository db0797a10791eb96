"""The params schema: ``params.yaml``'s sections (:mod:`.params`), a variant's recipe
(:mod:`.recipe`) and the field types they share (:mod:`.fields`). Light: pydantic and the variant
table, no torch.

    >>> params = load_params("params.yaml")
    >>> kind, recipe = params.variant("finetune_b16")
"""

from .fields import DATASETS, Budget, Dataset, Name, Seed
from .params import (
    STRATEGIES,
    BaseParams,
    EvaluateParams,
    Params,
    PrepareParams,
    PretrainedParams,
    TrainerParams,
    TTAParams,
    load_params,
    parse_params,
)
from .recipe import (
    AugmentParams,
    BackboneSchedule,
    FinetuneRecipe,
    ModelParams,
    PretrainRecipe,
    Recipe,
    TrainParams,
)
from .tune import (
    ChoiceSpace,
    PruneParams,
    RangeSpace,
    SamplerParams,
    SearchParams,
    TuneParams,
    apply_overrides,
    base_name,
    trial_recipe,
    tuned_name,
)

__all__ = [
    "DATASETS", "STRATEGIES", "AugmentParams", "BackboneSchedule", "BaseParams", "Budget",
    "Dataset", "EvaluateParams", "FinetuneRecipe", "ModelParams", "Name", "Params",
    "PrepareParams", "PretrainRecipe", "PretrainedParams", "Recipe", "Seed", "TTAParams",
    "TrainParams", "TrainerParams", "load_params", "parse_params",
    "ChoiceSpace", "PruneParams", "RangeSpace", "SamplerParams", "SearchParams", "TuneParams",
    "apply_overrides", "base_name", "trial_recipe", "tuned_name",
]
