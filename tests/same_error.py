"""Bad input gets torch's error: run the same call on torch and on fusedrnn, compare the
exception's type and message (shared by the sequence-module and the cell bad-input tests)."""


def outcome(fn):
    """``(exception type, message)`` of what ``fn()`` raises, or ``(None, result)``."""
    try:
        return None, fn()
    except Exception as e:  # noqa: BLE001 - we compare whatever torch raises
        return type(e), str(e)


def assert_same_error(ref_fn, our_fn):
    """``our_fn()`` raises what ``ref_fn()`` (torch) raises: same type, same message. Returns
    torch's ``(type, message)``."""
    ref_type, ref_msg = outcome(ref_fn)
    assert ref_type is not None, "torch accepted the input: the case does not test an error"
    our_type, our_msg = outcome(our_fn)
    assert our_type is ref_type, (
        f"exception type: fusedrnn {our_type} ({our_msg!r}) != torch {ref_type} ({ref_msg!r})"
    )
    assert our_msg == ref_msg, f"message: fusedrnn {our_msg!r} != torch {ref_msg!r}"
    return ref_type, ref_msg
