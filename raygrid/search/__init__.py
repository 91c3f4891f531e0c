"""The scikit-learn-facing searches, all on :class:`raygrid.search.base.BaseSearch`'s three fit
steps (prepare, run, finish): ``grid`` (GridSearchCV, RandomizedSearchCV), ``halving``, ``tune``
(Ray Tune trials in place of the run step) and ``validation`` (cross_validate, cross_val_score).
``callbacks`` and ``routing`` carry scikit-learn's callback and metadata-routing APIs."""
