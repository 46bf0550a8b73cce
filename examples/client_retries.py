"""Calling a Weir app from production clients: retries with exponential backoff on 5xx
(honouring 503's Retry-After when Weir sheds load), and a timeout on every attempt.

    python examples/client_retries.py http://127.0.0.1:8000/

This is the practice from Ray Serve's production guide, unchanged: Weir answers shed
requests with 503 and a Retry-After header, which urllib3's Retry waits for.
"""

from __future__ import annotations

import sys

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


def production_session(total: int = 5, backoff_factor: float = 0.1) -> requests.Session:
    """A Session that retries 500-504 with exponential backoff (0.1 s, 0.2 s, 0.4 s, ...),
    waiting at least as long as a 503's Retry-After says."""
    retries = Retry(
        total=total,
        backoff_factor=backoff_factor,
        status_forcelist=[500, 501, 502, 503, 504],
        respect_retry_after_header=True,
        allowed_methods=None,  # retry POST too: shed requests never started on a replica
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def main() -> None:
    """GET the URL given on the command line with the production settings."""
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/"
    response = production_session().get(url, timeout=10)
    print(response.status_code, response.text)


if __name__ == "__main__":
    main()
