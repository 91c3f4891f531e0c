"""Persisted fits: a SQLite store on the driver that makes searches resumable and fits reusable.

Every finished fit is written the moment its result reaches the driver and committed within 0.2 s;
each is keyed by a fingerprint of everything that decides its result. Rerunning a search with the
same ``storage`` runs only the fits whose fingerprint has no usable row.

- ``identity``: what identifies a fit (library versions, :class:`Fingerprinter`, over
  :mod:`raygrid.engine.describe`'s descriptions of values and code);
- ``schema``: the SQLite file: schema, creation, validation, read-only opening;
- ``fitstore``: :class:`FitStore`, the store object (write, look up, summarise);
- ``summary``: :class:`StoreSummary`, what :meth:`FitStore.summary` returns;
- ``session``: :class:`StoreSession`, one search's use of a store (plan, reuse, record).
"""
from raygrid.engine.store.fitstore import FitStore
from raygrid.engine.store.identity import Fingerprinter, Unhashable, class_identity, digest, library_versions
from raygrid.engine.store.schema import FILENAME, SCHEMA_VERSION, StoreError
from raygrid.engine.store.summary import SearchSummary, StoreSummary
from raygrid.engine.store.session import StoreSession, open_session, resume_advice, resume_hint

__all__ = ["FitStore", "StoreError", "StoreSession", "Fingerprinter", "open_session", "digest",
           "library_versions", "FILENAME", "SCHEMA_VERSION", "Unhashable", "class_identity",
           "resume_hint", "resume_advice", "StoreSummary", "SearchSummary"]
