"""The reference article's two services, written with audience_token: an api, and a data store that answers only it.

- ``services.api``: ``GET /`` calls the data store with the Pod's audience token (``TokenFile`` and
  ``bearer_auth``) and returns the data store's answer; it logs when it re-reads a rotated token.
- ``services.data_store``: checks every caller with ``TokenReviewer(audience="data-store",
  allow=["api/api"])`` and answers who called it; 401, 403 and 503 are the library's.

Run each with ``python -m services.api`` / ``python -m services.data_store``; both take their settings
from the environment (``services.settings``). See the README beside this package.
"""
