"""Training wrapper that keeps a gated model's compute near a budget."""

import keras
import numpy as np

from keras_dynamic.layers._conditional import GATE
from keras_dynamic.layers._conditional import ROUTE
from keras_dynamic.losses.gates import compute_budget_loss
from keras_dynamic.losses.gates import executed_fraction as fraction_of_full
from keras_dynamic.models._graph import check_functional
from keras_dynamic.models._graph import conditional_branches
from keras_dynamic.models.macs import conditional_macs


@keras.saving.register_keras_serializable(package="keras_dynamic")
class ComputeBudget(keras.Model):
    """Wraps a gated model so that `fit` adds a MACs-weighted compute budget.

    The wrapper behaves like the wrapped model (same inputs, outputs and
    output names, so `compile` takes the same losses and metrics). In
    training it also adds

        weight * (executed_fraction - budget)^2

    where `executed_fraction` is the batch's MACs-weighted share of the
    model's full cost: the MACs that always run, plus every gated branch
    (`GatedResidual`, `GatedConcat`) times its batch execution rate, plus
    the expert each sample is routed to (`RoutedSum`), over the cost of the
    model with every gate on. The gate rates are means of the
    straight-through samples, so the gradient reaches the gates; a router's
    choice is an argmax and only adds its MACs. Branch MACs come from
    `conditional_macs` (analytic, per merge input) unless given.

    The flow follows tensorflow-model-optimization's: wrap -> `fit` ->
    `strip` -> export. `strip` returns the wrapped model itself.

    Args:
        model: a functional `keras.Model` with at least one `GatedResidual`,
            `GatedConcat` or `RoutedSum` merge in its top-level graph.
        budget: float in (0, 1], the wanted share of the full cost; it must
            be above the share that always runs.
        weight: non-negative float, the weight of the budget term.
        branch_macs: optional `{merge layer name: [MACs of each conditional
            input, in input order]}` for every merge, with `fixed_macs`;
            by default both are counted with `conditional_macs`.
        fixed_macs: the MACs outside the conditional branches (with
            `branch_macs`).

    Example:

    >>> import numpy as np, keras
    >>> from keras_dynamic.models import ComputeBudget, gated_resnet
    >>> base = gated_resnet((8, 8, 1), num_classes=3, widths=(8,),
    ...                     blocks_per_stage=(2,))
    >>> model = ComputeBudget(base, budget=0.6, weight=2.0)
    >>> model.compile(
    ...     "adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ... )
    >>> x = np.random.rand(16, 8, 8, 1).astype("float32")
    >>> history = model.fit(x, np.arange(16) % 3, epochs=1, verbose=0)
    >>> 0.0 <= model.executed_fraction(x) <= 1.0
    True
    >>> model.strip() is base
    True

    Reference:
        Veit and Belongie, "Convolutional Networks with Adaptive Inference
        Graphs", ECCV 2018 (target-rate training of gates).
    """

    # Keyword-only: `keras.Model(a, b)` with two positional arguments is the
    # functional constructor and would bypass this class.
    def __init__(
        self,
        model,
        *,
        budget: float = 0.5,
        weight: float = 1.0,
        branch_macs=None,
        fixed_macs=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_functional(model, "ComputeBudget")
        if isinstance(budget, bool) or not (
            isinstance(budget, (int, float)) and 0 < budget <= 1
        ):
            raise ValueError(
                f"`budget` must be a number in (0, 1]. Received: budget={budget!r}"
            )
        if isinstance(weight, bool) or not (
            isinstance(weight, (int, float)) and weight >= 0
        ):
            raise ValueError(
                f"`weight` must be a non-negative number. Received: weight={weight!r}"
            )
        branches = conditional_branches(model)
        if not branches:
            raise ValueError(
                f"ComputeBudget: model '{model.name}' has no GatedResidual, "
                "GatedConcat or RoutedSum merge in its graph, so there is no "
                "compute to budget."
            )
        macs, fixed, full = _branch_costs(model, branches, branch_macs, fixed_macs)
        always = fixed / full
        if budget <= always:
            raise ValueError(
                f"ComputeBudget: budget={budget} cannot be met by model "
                f"'{model.name}': {always:.3f} of its compute runs for every "
                "sample (outside the gated branches)."
            )
        decisions, slots = [], {}
        for branch in branches:
            if id(branch.merge_node) not in slots:
                slots[id(branch.merge_node)] = len(decisions)
                decisions.append(branch.decision)
        self.model = model
        self.budget = float(budget)
        self.weight = float(weight)
        self.branch_macs = branch_macs
        self.fixed_macs = fixed_macs
        self._plan = [(slots[id(b.merge_node)], b.kind, b.group) for b in branches]
        self._macs = macs
        self._fixed = fixed
        self._full = full
        self._with_decisions = keras.Model(
            model.input,
            {"outputs": model.output, "decisions": decisions},
            name=f"{model.name}_with_decisions",
        )
        # All weights belong to the wrapped functional model, which is built.
        self.built = True

    @property
    def output_names(self):
        # `compile` maps dict losses/metrics to outputs through these names.
        return self.model.output_names

    def _branch_values(self, decisions):
        """`(batch,)` execution value of every branch, in plan order."""
        values = []
        for slot, kind, group in self._plan:
            decision = decisions[slot]
            if kind == GATE:
                values.append(decision[:, group])
            else:
                chosen = keras.ops.argmax(decision, axis=-1)
                values.append(keras.ops.cast(keras.ops.equal(chosen, group), "float32"))
        return values

    def call(self, inputs, training=None):
        result = self._with_decisions(inputs, training=training)
        if training and self.weight > 0:
            rates = keras.ops.stack(
                [
                    keras.ops.mean(keras.ops.cast(v, "float32"))
                    for v in self._branch_values(result["decisions"])
                ]
            )
            self.add_loss(
                self.weight
                * compute_budget_loss(
                    rates,
                    self._macs,
                    self.budget,
                    fixed_macs=self._fixed,
                    total_macs=self._full,
                )
            )
        return result["outputs"]

    def executed_fraction(self, x, batch_size=None) -> float:
        """The mean share of the full cost the model executes on `x`.

        Runs the model at inference (hard decisions) and averages the
        MACs-weighted execution over the samples.

        Args:
            x: inputs, as for `predict`.
            batch_size: as for `predict`.

        Returns:
            A float in [0, 1].
        """
        decisions = self._with_decisions.predict(x, batch_size=batch_size, verbose=0)[
            "decisions"
        ]
        values = self._branch_values(
            [keras.ops.convert_to_tensor(d) for d in decisions]
        )
        rates = [float(np.mean(keras.ops.convert_to_numpy(v))) for v in values]
        fraction = fraction_of_full(
            rates, self._macs, fixed_macs=self._fixed, total_macs=self._full
        )
        return float(keras.ops.convert_to_numpy(fraction))

    def strip(self):
        """Returns the wrapped model (the same object, with trained weights)."""
        return self.model

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "budget": self.budget,
            "weight": self.weight,
            "branch_macs": self.branch_macs,
            "fixed_macs": self.fixed_macs,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model, **config)


def _branch_costs(model, branches, branch_macs, fixed_macs):
    """(per-branch MACs in branch order, fixed MACs, full MACs)."""
    if (branch_macs is None) != (fixed_macs is None):
        raise ValueError(
            "ComputeBudget: give `branch_macs` and `fixed_macs` together, or "
            "neither (then both are counted from the model). Received: "
            f"branch_macs={branch_macs!r}, fixed_macs={fixed_macs!r}"
        )
    if branch_macs is None:
        counted = conditional_macs(model)
        return [r.macs for r in counted.branches], counted.fixed, counted.full
    per_merge = {}
    for branch in branches:
        per_merge.setdefault(branch.merge.name, []).append(branch)
    if set(branch_macs) != set(per_merge):
        raise ValueError(
            "ComputeBudget: `branch_macs` must have one entry per merge layer "
            f"of model '{model.name}': {sorted(per_merge)}. Received keys: "
            f"{sorted(branch_macs)}"
        )
    macs, full = [], float(fixed_macs)
    for name, merge_branches in per_merge.items():
        given = list(branch_macs[name])
        if len(given) != len(merge_branches):
            raise ValueError(
                f"ComputeBudget: `branch_macs['{name}']` must list "
                f"{len(merge_branches)} MAC counts, one per conditional input. "
                f"Received: {given!r}"
            )
        if merge_branches[0].kind == ROUTE:
            full += max(given)
        else:
            full += sum(given)
    for branch in branches:
        index = per_merge[branch.merge.name].index(branch)
        macs.append(branch_macs[branch.merge.name][index])
    return macs, float(fixed_macs), full
