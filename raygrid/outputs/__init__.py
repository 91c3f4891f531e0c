"""What a search leaves behind: ``results`` (the fit and candidate frames, ``cv_results_``),
``progress`` (the live line), ``plots`` and ``report``."""
