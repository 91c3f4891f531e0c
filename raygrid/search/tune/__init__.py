"""TuneSearchCV and TuneGridSearchCV: tune-sklearn's interface on Ray Tune's Tuner API.

A tune-sklearn user changes one line, ``from raygrid.tune import TuneSearchCV``. One Tune trial
trains one candidate on every cross-validation fold, in increments (Keras epochs, ``partial_fit``
passes, warm-start steps), and reports the mean CV score as it goes; a scheduler (ASHA with
``early_stopping=True``) stops weak candidates. The fitted search has the same ``cv_results_``,
``best_*``, ``results_`` (one row per fold, at the last increment a candidate reached) and
``summary_`` as raygrid's other searches, plus ``history_`` (every report) and ``fit_seconds_``.

How it keeps the overhead down (each Tune report costs a round trip to the driver, each scoring a
predict on every fold):

- with raygrid's ASHA, trials score and report only at ASHA's rungs and at their own budget;
- Keras candidates equal but for ``epochs`` share one trial (``share_epochs``): the run trained to
  25 epochs is scored at epochs 5 and 10 for the 5- and 10-epoch candidates;
- schedulers that pause trials (MedianStoppingRule, HyperBand) get a checkpoint of the folds with
  every report, so a resumed trial goes on where it stopped instead of starting again.

Ray Tune is imported when ``fit`` runs, never on ``import raygrid``.

The package: ``spec`` (schedulers, increments, the trial spec), ``spaces`` (search spaces and
searchers), ``trial`` (what a Tune actor runs), ``run_args`` (tune-sklearn's ``tune_params`` on
the Tuner API), ``experiment`` (the Tune experiment and its results), ``search`` (the run step
on ``raygrid.search.base.BaseSearch``'s fit steps), ``estimators`` (the two public classes).
"""
from raygrid.search.tune.estimators import TuneGridSearchCV, TuneSearchCV
from raygrid.search.tune.search import TuneBaseSearch
from raygrid.search.tune.spec import ASHA, incremental_kind

__all__ = ["TuneSearchCV", "TuneGridSearchCV", "TuneBaseSearch", "ASHA", "incremental_kind"]
