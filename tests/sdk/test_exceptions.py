"""Remote errors keep their class (weir.exceptions.remote_error), with nothing running."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from weir.exceptions import UserCodeError, remote_error


class NeedsArgs(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code


def raised(cause: BaseException) -> UserCodeError:
    return remote_error(type(cause).__name__, str(cause), "Traceback (most recent call "
                        "last):\n  File \"model.py\"\n", cloudpickle.dumps(cause))


@pytest.mark.parametrize("cause", [ValueError("bad"), KeyError("k"), NeedsArgs(7, "no"),
                                   FileNotFoundError(2, "gone"), TimeoutError("late")])
def test_the_error_is_both_the_users_class_and_user_code_error(cause: Exception) -> None:
    error = raised(cause)
    assert isinstance(error, type(cause)) and isinstance(error, UserCodeError)
    assert error.args == cause.args
    assert error.cause.args == cause.args  # type: ignore[attr-defined]
    assert str(error).startswith(f"{type(cause).__name__}: ")
    assert 'File "model.py"' in str(error)
    with pytest.raises(type(cause)):
        raise error


def test_attributes_of_the_cause_are_kept_and_it_pickles_again() -> None:
    error = raised(NeedsArgs(7, "no"))
    assert error.code == 7  # type: ignore[attr-defined]
    again = pickle.loads(cloudpickle.dumps(error))
    assert isinstance(again, NeedsArgs) and isinstance(again, UserCodeError)
    assert str(again) == str(error)


def test_a_cause_the_caller_cannot_rebuild_gives_the_generic_error() -> None:
    for pickled in (b"", b"not a pickle"):
        error = remote_error("Mystery", "what", "tb", pickled)
        assert type(error) is UserCodeError
        assert error.error_type == "Mystery" and "what" in str(error)
