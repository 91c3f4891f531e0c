"""Search specs: a YAML file that names the data, preprocessing, estimator, search space and run.

A spec is checked in two passes before anything runs, and every problem found is reported at once,
each with its key path (``search.grid.C``) and what was expected:

1. the schema (pydantic models, unknown keys rejected, no silent type coercion);
2. everything the schema cannot see: exactly one data source, the data file exists and has the
   target column, the estimator's import path resolves and the estimator builds with its params,
   every grid/distribution parameter exists on the estimator, scoring names are known, ...

Example (``examples/specs/breast_cancer_svc.yaml``)::

    data: {name: breast_cancer}            # or {name: pima, path: ...} or {csv: FILE, target: COLUMN}
    preprocessing: standard                # none | standard | minmax, fitted per fold in a Pipeline
    estimator: {import: "sklearn.svm:SVC", params: {cache_size: 500}}
    search:
      kind: grid                           # or random, with distributions and n_iter
      grid: {C: [0.1, 1, 10], gamma: [scale, 0.01]}
    cv: {kind: stratified, n_splits: 5, shuffle: true, random_state: 0}
    scoring: [accuracy, roc_auc]
    refit: accuracy

Parameter names in ``search`` are the estimator's own. When preprocessing wraps the estimator in a
``Pipeline([("scaler", ...), ("model", estimator)])`` they are prefixed with ``model__``
automatically; names already written for the pipeline (``model__C``, ``scaler__...``) are accepted
as they are. Relative paths (``data.csv``, ``data.path``, ``out``) are relative to the current
directory. Lists inside grid values (``hidden: [[12, 8], [30, 15]]``) become tuples.

The package, one job a module, data flowing one way: ``problems`` (what is wrong, in words),
``model`` (the schema), ``load`` (YAML and ``--set`` overrides), ``data``, ``estimator``,
``evaluation`` (scoring and cross-validation) and ``space`` (the checks beyond the schema), and
``prepare``, which runs them all and builds the run; ``starter`` is what ``raygrid init`` writes.
"""
from __future__ import annotations

from raygrid.cli.spec.load import apply_overrides, load_spec
from raygrid.cli.spec.model import Spec
from raygrid.cli.spec.prepare import Prepared, default_out_dir, prepare
from raygrid.cli.spec.problems import Problem, SpecError
from raygrid.cli.spec.starter import STARTER_SPEC

__all__ = [
    "Spec",
    "SpecError",
    "Problem",
    "Prepared",
    "load_spec",
    "apply_overrides",
    "prepare",
    "default_out_dir",
    "STARTER_SPEC",
]
