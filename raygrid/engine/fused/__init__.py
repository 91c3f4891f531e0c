"""The fused engine: many Keras fits trained at once as one vectorised JAX program.

A grid over a Keras model mostly repeats one computation: the same layers, the same loss and
batch size, with a different initializer, optimizer, learning rate, activation, fold or number
of epochs. The fused engine groups such trials and trains every (candidate, fold) of a group
together: parameters and optimizer variables are stacked along a leading *lane* axis and one
training step, written with Keras 3's own stateless API (``model.compute_loss_and_updates``,
which calls ``model.stateless_call``, under ``jax.value_and_grad``, then
``optimizer.stateless_apply``), is mapped over the lanes with ``jax.vmap``.

What is a lane value and what separates groups:

* a group shares the model's structure (layers, shapes, wiring), loss, batch size and shuffling;
* each lane has its own initial weights (from the lane's own model and initializers), its own
  training rows (the fold; folds of unequal size are padded and masked so that padding
  contributes nothing and each lane takes as many steps per epoch as Keras' own ``fit``
  would), its own optimizer variables (so the learning rate is a lane value), and, as
  data-dependent switches, its activation functions (for layers configured with a named
  activation; checked on a few rows, else activations separate groups) and its optimizer
  (each lane carries the variables of every optimizer in the group and keeps its own update);
* candidates that differ only in ``epochs`` share a lane: it trains to the largest value once,
  with one shuffling sequence, and is scored from the weights at each requested epoch count.

Seeds: a lane's seed is the raygrid seed of its longest trial (``random_state`` of the search),
else the estimator's own ``random_state``, else one derived from the lane's parameters and fold;
the driver plans it (``assign``) and every trial of the lane carries it, in ``results_`` and in
the fit store's identity. The lane replays what scikeras does with ``random_state=seed``: the
same initial weights (Keras draws an unseeded initializer's seed from Python's ``random`` as the
layer is created) and the same batch order (``np.random.permutation`` each epoch, after the one
Keras' ``fit`` draws to build the model), so a lane's weights equal scikeras' own ``fit`` with
that seed up to float rounding. A shorter trial read off the lane carries the lane's seed, not
the one the standard engine would have given it.

Predictions of every lane are computed inside the program; scores come from the search's own
scorer on the driver side of the group, through a small stand-in estimator that returns those
predictions through scikeras' own target decoding, so every metric the standard engine supports
works and the results are ``FitResult`` rows like the standard engine's (``engine="fused"``).

Training options (``options``, ``lanedata``, ``stopping``): ``validation_split`` (Keras holds out
the last rows before shuffling), ``validation_data``, ``class_weight`` and ``sample_weight``
(rows of weight 0 dropped as scikeras drops them; each row's loss weighted, a batch's loss
``sum(weight * loss) / rows`` as Keras reduces it) are lane values; so are
``keras.callbacks.EarlyStopping``'s settings: the monitored loss or compiled metric is computed
in the program after each epoch (on the validation rows for ``val_*``), each lane stops on its
own (a per-lane mask keeps a stopped lane's weights) and keeps its best weights where
``restore_best_weights`` asks; ``results_`` gets a ``stopped_epoch`` column, as for the
standard engine's fits with EarlyStopping.

Whatever cannot be fused (another estimator, another callback, ``validation_freq``,
``return_estimator``, a grid over a pipeline's preprocessing...) runs on the standard executor
in the same search, with the reason in one warning. ``engine="auto"`` fuses only where a group
has two lanes or more.

Where it runs: the driver plans lanes without building any model (``assign``); the lanes of one
batch size and shuffling form a *unit*, which the executor runs like any other work (see
``raygrid.engine.executors.base.Unit``): with the Ray backend, one task in a worker whose
``runtime_env`` sets ``KERAS_BACKEND=jax`` (whatever the driver's backend), with the executor's
retries, Ctrl-C grace and fit store; where the cluster has GPUs the units share them evenly. The
task builds each model once (and keeps it for the next unit of the same search), groups lanes by
model structure and trains one program per group; trials it cannot train come back as fallback
rows that the standard engine then runs, with one warning line saying why. With the serial
backend units run in this process, when its Keras backend is JAX. JAX's persistent compilation
cache (``~/.cache/raygrid/jax``, or ``RAYGRID_JAX_CACHE``; ``RAYGRID_JAX_CACHE=0`` turns it off)
makes a repeated search skip XLA compilation.

The modules, in the order data flows through them: ``plan`` (the driver's plan, without Keras:
lanes, seeds, units, and why the rest cannot fuse), ``executor`` (``FusedExecutor``: units to
the inner executor, fallback rows back to the standard engine), ``unit`` (what one task runs),
``grouping`` (lanes grouped into programs by the structure of their built models), ``options``
(a trial's training options, read without Keras), ``lanedata`` (each lane's rows, weights and
monitored quantity), ``members`` (the Keras model of one build key), ``group`` (one group
prepared, compiled, trained, scored), ``program`` (the vmapped training segment, activation
switches), ``stopping`` (EarlyStopping as array updates), ``scoring`` (vectorised accuracy, or
the search's scorer through a stand-in estimator) and ``runtime`` (TensorFlow kept out, JAX's
compilation cache). Private names of Keras, scikeras and scikit-learn are reached
through ``raygrid._compat``; where one moved, those fits run on the standard engine.
"""
from __future__ import annotations

from raygrid.engine.executors.base import Unit, gpu_share
from raygrid.engine.fused.executor import ENGINES, FusedExecutor, last_stats, wrap
from raygrid.engine.fused.group import GroupRun, run_group
from raygrid.engine.fused.grouping import FusionPlan, plan_fusion
from raygrid.engine.fused.plan import (Assignment, GroupSpec, Lane, NotFusable, assign,
                                       final_step_view)
from raygrid.engine.fused.runtime import configure_compilation_cache
from raygrid.engine.fused.unit import FALLBACK, run_unit, unit_failed

__all__ = ["ENGINES", "FALLBACK", "Assignment", "FusedExecutor", "FusionPlan", "GroupRun",
           "GroupSpec", "Lane", "NotFusable", "Unit", "assign", "configure_compilation_cache",
           "final_step_view", "gpu_share", "last_stats", "plan_fusion", "run_group", "run_unit",
           "unit_failed", "wrap"]
