"""numba's njit / prange for the loop-heavy kernels (the solver, co-occurrence counts), or plain
Python stand-ins where numba cannot be imported: the same results, orders of magnitude slower.
Import this only where a kernel is needed: importing numba costs ~0.3 s of start-up."""

try:
    from numba import get_num_threads, njit, prange
except ImportError:  # pragma: no cover
    prange = range

    def get_num_threads():
        return 1

    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda func: func

__all__ = ["get_num_threads", "njit", "prange"]
