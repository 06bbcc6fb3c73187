"""The admission core: pure functions over plain dicts, from an AdmissionReview's bytes to the answer.

No I/O, no aiohttp, no argparse, no ``os``: it imports only the standard library, orjson, itself and
the exception tree (``webhook.errors``), and an import-direction test holds it to that. Its one entry
point is :func:`webhook.core.review.review_body` (``review`` for a body already decoded).
"""
