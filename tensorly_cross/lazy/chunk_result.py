"""A chunk's result, its exception noted with the multi-indices it was computing."""


def noted_result(result, chunk, number, n_chunks):
    """``result()``; an exception it raises gets a note naming ``chunk``'s multi-indices.

    Parameters
    ----------
    result : callable
        Returns the chunk's result or raises (``future.result``, or the call itself).
    chunk : ndarray of int64, shape (m, d)
    number : int
        The chunk's position in its batch, from 0.
    n_chunks : int
        The chunks in the batch.
    """
    try:
        return result()
    except Exception as error:
        error.add_note(f"raised by the function on chunk {number + 1} of {n_chunks}: "
                       f"{chunk.shape[0]} multi-indices from {as_tuple(chunk[0])} to "
                       f"{as_tuple(chunk[-1])} (chunk_size=1 names the very entry)")
        raise


def as_tuple(multi_index):
    """A multi-index as a tuple of Python ints (for messages)."""
    return tuple(int(i) for i in multi_index)
