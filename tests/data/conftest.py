"""Fixtures for the data tests.

Every data test gets its own empty cache and no LMREC_DATA_DIR, so no test sees another's files
or the developer's real cache; ``http_server`` serves a folder on 127.0.0.1 for the download path.
"""

import functools
import http.server
import os
import threading

import pytest


@pytest.fixture(scope="session")
def user_data_dir():
    """LMREC_DATA_DIR as the user set it, read before ``isolated_cache`` removes it."""
    return os.environ.get("LMREC_DATA_DIR")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    cache = tmp_path / "lmrec-cache"
    monkeypatch.setenv("LMREC_CACHE_DIR", str(cache))
    monkeypatch.delenv("LMREC_DATA_DIR", raising=False)
    return cache


@pytest.fixture
def http_server(tmp_path):
    """A file server on 127.0.0.1 serving ``tmp_path/www``; yields ``(www, base_url)``."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args, **kwargs: None  # keep test output quiet
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()
