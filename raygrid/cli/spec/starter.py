"""The spec ``raygrid init`` writes."""
from __future__ import annotations

#: What ``raygrid init`` writes: a spec that runs as it is (offline data) with every key explained.
STARTER_SPEC = """\
# A raygrid search spec. Check it with `raygrid check {path}`, run it with `raygrid run {path}`.
# Every key is described in docs/spec.md. Keys not given take the defaults shown in comments.
title: My first raygrid search

# The data: a built-in data set (breast_cancer: scikit-learn's, offline; pima: the Pima diabetes
# CSV, from `path`, $RAYGRID_PIMA, a cached copy or OpenML) or a CSV file with a header row.
data: {{name: breast_cancer}}
# data: {{csv: my_data.csv, target: label}}          # features: [col_a, col_b] (default: all others)

# Scaling fitted on each fold's training rows: none | standard | minmax. With a scaler the
# estimator is step "model" of a Pipeline; grid names below stay the estimator's own.
preprocessing: standard

# Any scikit-learn compatible estimator: "module:callable" and its fixed parameters.
estimator:
  import: "sklearn.svm:SVC"
  params: {{}}
# estimator: {{builtin: seed_mlp, params: {{epochs: 10}}}}   # the Keras seed MLP (raygrid[keras])

search:
  kind: grid                    # grid | random
  grid:                         # a mapping of lists, or a list of such mappings (sub-grids)
    C: [0.1, 1, 10]
    gamma: [scale, 0.01]
  # kind: random
  # distributions: {{C: {{dist: loguniform, low: 0.01, high: 100}}, gamma: [scale, auto]}}
  # n_iter: 20

cv: {{kind: stratified, n_splits: 5, shuffle: true, random_state: 0}}   # kind: auto | stratified | kfold
scoring: accuracy               # a scikit-learn scorer name, or a list of them
refit: true                     # with several metrics: the metric that picks the best
random_state: 0                 # seeds Keras fits per (candidate, fold)

# Where fits run: backend auto | ray | serial; address of a cluster; resources per fit in Ray's
# own names (giving them asks for Ray: the search starts Ray at once; default {{num_cpus: 1}}).
# ray_remote_args: {{num_cpus: 1, num_gpus: 0.25}}
# address: auto
# n_jobs: 8                     # at most this many fits at once (default: every slot)
out: raygrid-out/my_search      # results, plots, report.html and the fit store (resume)
"""
