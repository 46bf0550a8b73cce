"""`--http-server`'s choice: auto takes the fastest installed; a missing one names the extra."""

import pytest

from weir.http_servers import (
    FAST_EXTRA,
    HttpServerMissing,
    choose_http_server,
    installed_http_servers,
)


def test_auto_takes_uvicorn_when_installed() -> None:
    assert choose_http_server("auto", {"uvicorn", "hypercorn"}) == "uvicorn"


def test_auto_falls_back_to_hypercorn() -> None:
    assert choose_http_server("auto", {"hypercorn"}) == "hypercorn"


def test_auto_with_nothing_installed_names_the_extra() -> None:
    with pytest.raises(HttpServerMissing, match=r"weir\[fast\]"):
        choose_http_server("auto", set())


def test_named_server_is_kept_when_installed() -> None:
    assert choose_http_server("hypercorn", {"uvicorn", "hypercorn"}) == "hypercorn"
    assert choose_http_server("uvicorn", {"uvicorn"}) == "uvicorn"


def test_missing_uvicorn_is_one_line_naming_the_extra() -> None:
    with pytest.raises(HttpServerMissing) as caught:
        choose_http_server("uvicorn", {"hypercorn"})
    message = str(caught.value)
    assert "\n" not in message
    assert FAST_EXTRA in message and "--http-server uvicorn" in message


def test_unknown_server_names_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, uvicorn, hypercorn"):
        choose_http_server("gunicorn", {"uvicorn", "hypercorn"})


def test_hypercorn_is_always_installed() -> None:
    # A core dependency: `auto` can always fall back to it.
    assert "hypercorn" in installed_http_servers()
