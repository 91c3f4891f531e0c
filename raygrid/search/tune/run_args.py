"""tune-sklearn's ``fit(X, y, tune_params={...})``: arguments of the old ``tune.run`` laid onto
Ray Tune's Tuner API (``TuneConfig``, ``RunConfig``, ``FailureConfig``, ``CheckpointConfig``).

As in tune-sklearn, the user's values win over the ones the search sets, with a warning that
names those it changes; the user's ``callbacks`` join the search's own."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

#: tune.run argument -> the Tuner API's field, by where it goes.
TUNE_CONFIG = {k: k for k in ("search_alg", "scheduler", "num_samples", "max_concurrent_trials",
                              "time_budget_s", "reuse_actors", "trial_name_creator",
                              "trial_dirname_creator")}
RUN_CONFIG = {"name": "name", "storage_path": "storage_path", "local_dir": "storage_path",
              "stop": "stop", "verbose": "verbose", "progress_reporter": "progress_reporter",
              "log_to_file": "log_to_file", "sync_config": "sync_config"}
FAILURE_CONFIG = {"max_failures": "max_failures", "fail_fast": "fail_fast"}
CHECKPOINT_CONFIG = {"keep_checkpoints_num": "num_to_keep",
                     "checkpoint_score_attr": "checkpoint_score_attribute",
                     "checkpoint_freq": "checkpoint_frequency",
                     "checkpoint_at_end": "checkpoint_at_end"}
#: tune.run arguments the search itself decides: the parameter of the search that sets each.
REFUSED = {"config": "param_grid / param_distributions", "metric": "scoring and refit",
           "mode": "mode", "run_or_experiment": "estimator"}


@dataclass
class RunArgs:
    """The keyword arguments of each Tuner config a search builds."""

    tune_config: dict = field(default_factory=dict)
    run_config: dict = field(default_factory=dict)
    failure_config: dict = field(default_factory=dict)
    checkpoint_config: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)

    def override(self, tune_params: Mapping[str, Any] | None) -> None:
        """Lay ``tune_params`` (tune.run's arguments) over what the search set."""
        if not tune_params:
            return
        if not isinstance(tune_params, Mapping):
            raise TypeError(f"tune_params must be a dict of tune.run arguments, got "
                            f"{tune_params!r}")
        known = {**{k: (self.tune_config, v) for k, v in TUNE_CONFIG.items()},
                 **{k: (self.run_config, v) for k, v in RUN_CONFIG.items()},
                 **{k: (self.failure_config, v) for k, v in FAILURE_CONFIG.items()},
                 **{k: (self.checkpoint_config, v) for k, v in CHECKPOINT_CONFIG.items()}}
        refused = sorted(set(tune_params) & set(REFUSED))
        if refused:
            raise ValueError("tune_params cannot set " + ", ".join(
                f"{k!r} (set the search's {REFUSED[k]} instead)" for k in refused))
        unknown = sorted(set(tune_params) - set(known) - {"callbacks", "resources_per_trial"})
        if unknown:
            raise ValueError(f"tune_params: unknown tune.run argument(s) {unknown}; raygrid "
                             f"maps {sorted([*known, 'callbacks', 'resources_per_trial'])}")
        overridden = []
        for key, value in tune_params.items():
            if key == "callbacks":
                self.run_config["callbacks"] = [*self.run_config.get("callbacks", []), *value]
                continue
            target, name = (self.resources, None) if key == "resources_per_trial" else known[key]
            if name is None:
                if self.resources and dict(value) != self.resources:
                    overridden.append(key)
                self.resources.clear()
                self.resources.update(value)
                continue
            if target.get(name) is not None and target[name] != value:
                overridden.append(key)
            target[name] = value
        if "fail_fast" in tune_params and "max_failures" not in tune_params \
                and tune_params["fail_fast"]:
            self.failure_config["max_failures"] = 0  # Ray's rule: fail_fast retries nothing
        if overridden:
            warnings.warn("The following preset tune.run parameters will be overriden by "
                          f"tune_params: {', '.join(overridden)}. This may cause unexpected "
                          "issues! If you experience issues, please try removing those "
                          "parameters from tune_params.", UserWarning, stacklevel=4)
