"""How fits run, in the order data flows: ``plan`` (candidates x folds -> trials), ``fitting``
(one trial -> one fit result, on a worker), ``fused`` (many Keras trials trained as one model),
``executors`` (the seam: serial, Ray, auto), ``runner`` (trials through an executor and the
``store``), with ``scoring`` and ``failures`` the one place for scores and failed fits."""
