"""The process group that collectives run over, and the host steps that run them.

A process started by `mpiexec -n N` (Open MPI or MPICH) belongs to a world of N processes;
any other process is a group of one, and nothing here imports mpi4py for it (the default
install does not need it). Every `axis_name` names that world: nnjit has one data-parallel axis.

    >>> g = world()            # SingleProcess() outside mpiexec, MpiGroup under it
    >>> g.rank, g.size
    (0, 1)

Every MPI call is nonblocking and waited on by polling, with a deadline of NNJIT_MPI_TIMEOUT
seconds (default 60): a rank that died or diverged makes the others print which collective
timed out and abort the job (MPI_Abort), instead of hanging forever. An uncaught exception in a
rank aborts the job too (the excepthook that `python -m mpi4py` installs), so the others do not
wait for it. At the first call of a compiled program, the ranks compare a hash of its sequence
of collectives (ops, shapes, dtypes): different programs on different ranks raise
`CollectiveMismatch` on every rank, naming the first collective that differs.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Sequence

import numpy as np

from ..ir import NnjitError, Op
from ..ir.kernel import HostKernel

#: Environment variables a launcher sets to the world size (Open MPI, MPICH/Hydra, PMIx).
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
DEFAULT_TIMEOUT = 60.0
_DESC_BYTES = 512      # a collective's description, exchanged when the ranks' programs differ


class CollectiveError(NnjitError):
    """A collective could not run (no MPI, a group of the wrong size)."""


class CollectiveMismatch(CollectiveError):
    """The ranks run different collectives (shapes, dtypes or ops differ across ranks)."""


def launched_size() -> int:
    """The world size the launcher announced (1 when not started by mpiexec)."""
    for var in SIZE_VARS:
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) >= 1:
            return int(v)
    return 1


def timeout_seconds() -> float:
    raw = os.environ.get("NNJIT_MPI_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        t = float(raw)
    except ValueError:
        raise CollectiveError(f"NNJIT_MPI_TIMEOUT must be a number of seconds, got {raw!r}") \
            from None
    if not t > 0:
        raise CollectiveError(f"NNJIT_MPI_TIMEOUT must be > 0, got {raw!r}")
    return t


class SingleProcess:
    """A group of one: every collective is a copy, the rank is 0."""

    rank, size = 0, 1
    library = "none (a single process)"

    def start(self, op: str, src: np.ndarray, dst: np.ndarray, attrs: dict):
        np.copyto(dst, src.reshape(dst.shape))
        return _Done()

    def wait(self, request, what: str) -> None:
        pass

    def check_programs(self, name: str, descs: Sequence[str]) -> None:
        pass


class _Done:
    pass


class MpiGroup:
    """MPI_COMM_WORLD through mpi4py, every call nonblocking with a polling, timed wait."""

    def __init__(self):
        try:
            from mpi4py import MPI  # noqa: PLC0415  (optional: only under mpiexec)
        except ImportError as e:
            raise CollectiveError(
                f"this process was started by mpiexec with {launched_size()} ranks, but "
                f"mpi4py is not installed ({e}); install nnjit's 'mpi' extra: "
                "pip install -e '.[mpi]'") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.library = MPI.Get_library_version().splitlines()[0].strip()
        self.timeout = timeout_seconds()
        self.bytes_reduced = 0          # payload bytes this process all-reduced (benchmarks)
        self._checked: set[str] = set()
        _install_abort_hook(self)

    # -- starting and waiting --------------------------------------------------------------------
    def start(self, op: str, src: np.ndarray, dst: np.ndarray, attrs: dict):
        """Post collective `op` reading `src` and writing `dst` (both contiguous and kept alive
        by the caller until `wait`); returns the request."""
        MPI, comm = self.MPI, self.comm
        if op == "all_reduce":
            self.bytes_reduced += src.nbytes
            mpi_op = MPI.MAX if attrs["reduce"] == "max" else MPI.SUM
            return _Pending(comm.Iallreduce(src, dst, mpi_op),
                            (lambda: np.divide(dst, self.size, out=dst, casting="unsafe"))
                            if attrs["reduce"] == "mean" else None)
        if op == "broadcast":
            if self.rank == attrs["root"]:
                np.copyto(dst, src.reshape(dst.shape))
            return _Pending(comm.Ibcast(dst, root=attrs["root"]))
        if op == "all_gather":
            # Rank blocks are contiguous only along axis 0: gather (size, *x) and move the axis.
            axis = attrs["axis"]
            if axis == 0:
                return _Pending(comm.Iallgather(src, dst))
            blocks = np.empty((self.size,) + src.shape, src.dtype)
            return _Pending(comm.Iallgather(src, blocks),
                            lambda: np.copyto(dst, np.concatenate(list(blocks), axis=axis)))
        if op == "reduce_scatter":
            axis, n = attrs["axis"], self.size
            self.bytes_reduced += src.nbytes
            # Rank r's block of the sum must be contiguous: split along `axis` first.
            send = np.ascontiguousarray(np.stack(np.split(src, n, axis=axis)))
            recv = dst if axis == 0 else np.empty(send.shape[1:], src.dtype)
            done = None if axis == 0 else (lambda: np.copyto(dst, recv))
            return _Pending(comm.Ireduce_scatter_block(send, recv, MPI.SUM), done, keep=send)
        raise CollectiveError(f"unknown collective {op!r}")

    def wait(self, request, what: str) -> None:
        """Wait for `request`, polling; past the deadline, report `what` and abort the job."""
        deadline = time.monotonic() + self.timeout
        nap = 0.0
        while not request.req.Test():
            if time.monotonic() > deadline:
                self.abort(f"{what} did not complete within NNJIT_MPI_TIMEOUT={self.timeout:g}s "
                           f"(another rank failed, stopped, or runs a different program)")
            # Spin briefly, then back off: a waiting rank must not steal a core from a rank
            # that is still computing on the same machine.
            if nap:
                time.sleep(nap)
            nap = min(1e-3, nap * 2 or 1e-6)
        if request.done is not None:
            request.done()

    def abort(self, message: str) -> None:
        sys.stderr.write(f"nnjit: rank {self.rank} of {self.size}: {message}; aborting the "
                         "MPI job\n")
        sys.stderr.flush()
        self.comm.Abort(1)

    # -- programs agree ----------------------------------------------------------------------------
    def check_programs(self, name: str, descs: Sequence[str]) -> None:
        """Raise CollectiveMismatch on every rank unless all ranks run the same collectives
        (`descs`, one line each, in order) in program `name`; done once per program."""
        key = "\n".join(descs)
        if key in self._checked:
            return
        digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little", signed=True)
        mine = np.array([digest, len(descs)], np.int64)
        theirs = np.empty((self.size, 2), np.int64)
        self.wait(_Pending(self.comm.Iallgather(mine, theirs)), f"program check of @{name}")
        if (theirs == mine).all():
            self._checked.add(key)
            return
        # Find the first collective that differs and show every rank's version of it.
        lengths = theirs[:, 1]
        k = _first_difference(self, descs, int(lengths.min()))
        line = descs[k] if k < len(descs) else "(none: this program ends here)"
        mine_desc = np.frombuffer(line.encode()[:_DESC_BYTES].ljust(_DESC_BYTES, b"\0"), np.uint8)
        every = np.empty((self.size, _DESC_BYTES), np.uint8)
        self.wait(_Pending(self.comm.Iallgather(mine_desc, every)), f"program check of @{name}")
        texts = [bytes(row).rstrip(b"\0").decode(errors="replace") for row in every]
        shown = "; ".join(f"rank {r}: {t}" for r, t in enumerate(texts))
        counts = ", ".join(map(str, lengths.tolist()))
        raise CollectiveMismatch(f"@{name}: the ranks run different collectives (shapes or "
                                 f"dtypes differ across ranks?); collectives per rank: {counts}; "
                                 f"collective #{k}: {shown}")


def _first_difference(g: MpiGroup, descs: Sequence[str], common: int) -> int:
    """The index of the first collective whose description differs on some rank (or the
    common length, when one program is a prefix of another)."""
    hashes = np.array([int.from_bytes(hashlib.sha256(d.encode()).digest()[:8], "little",
                                      signed=True) for d in descs[:common]] + [0], np.int64)
    every = np.empty((g.size, common + 1), np.int64)
    g.wait(_Pending(g.comm.Iallgather(hashes, every)), "program check")
    differs = np.nonzero((every != every[0]).any(axis=0))[0]
    return int(differs[0]) if differs.size else common


class _Pending:
    """An MPI request with what to do once it completes (and the buffers it must keep)."""

    def __init__(self, req, done=None, keep=None):
        self.req, self.done, self.keep = req, done, keep


def _install_abort_hook(group: MpiGroup) -> None:
    """An uncaught exception in one rank aborts the job (after printing it), so that the other
    ranks are not left waiting for a collective that will never come."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        group.abort(f"uncaught {kind.__name__}: {value}")

    sys.excepthook = hook


_WORLD: list = []     # NOTE: the process's one group (MPI's world is process-global state)


def world():
    """The process group of this process: created on first use, MPI only under mpiexec."""
    if not _WORLD:
        _WORLD.append(MpiGroup() if launched_size() > 1 else SingleProcess())
    return _WORLD[0]


# -- host steps -----------------------------------------------------------------------------------

def describe(k: HostKernel, dtypes: dict[str, str]) -> str:
    """One line naming a host step's collective, attributes and operand types (what the ranks
    compare)."""
    attrs = ", ".join(f"{a}={v}" for a, v in k.attrs if a != "slot")
    types = ", ".join(f"{dtypes[b]}{list(s)}" for b, s in zip(k.srcs + k.dsts, k.shapes))
    return f"{k.op.removesuffix('_start')}({attrs}) {types}"


class HostSteps:
    """Runs a program's host steps (collectives) on arrays over its buffers: a backend calls
    `begin()` before each run of the program and `run(i, arrays)` (srcs then dsts, shaped as
    the kernel sees them) when it reaches host kernel i. Starts and waits pair up by `slot`."""

    def __init__(self, name: str, kernels: Sequence[HostKernel], dtypes: dict[str, str]):
        self.name = name
        self.kernels = list(kernels)
        self.descs = [describe(k, dtypes) for k in self.kernels if not k.op.endswith("_wait")]
        self.pending: dict[int, object] = {}
        self._sizes = {k.attr("group_size") for k in self.kernels}

    def group(self):
        g = world()
        for n in self._sizes:
            if n != g.size:
                raise CollectiveError(f"@{self.name} was compiled for a group of {n} processes "
                                      f"but runs in one of {g.size} (trace and run it under the "
                                      "same mpiexec -n)")
        return g

    def begin(self) -> None:
        """Before each call: the ranks agree on the program (checked once)."""
        self.group().check_programs(self.name, self.descs)

    def run(self, i: int, arrays: Sequence[np.ndarray]) -> None:
        k = self.kernels[i]
        g = self.group()
        attrs = dict(k.attrs)
        what = f"{k.op.removesuffix('_wait')} in @{self.name} ({k.src or k.name})"
        if k.op == "axis_index":
            arrays[0][...] = g.rank
            return
        src, dst = arrays
        if k.op.endswith("_start"):
            self.pending[attrs["slot"]] = g.start(k.op.removesuffix("_start"), src, dst, attrs)
        elif k.op.endswith("_wait"):
            g.wait(self.pending.pop(attrs["slot"]), what)
        else:
            g.wait(g.start(k.op, src, dst, attrs), what)

    def drain(self) -> None:
        """Wait for every collective still in flight (a run that stopped early must not leave
        MPI writing into memory the next run reuses)."""
        g = world()
        while self.pending:
            _, req = self.pending.popitem()
            g.wait(req, f"a collective of @{self.name} left in flight")


# -- the graph interpreter's collectives ----------------------------------------------------------

def _result_shape(op: str, shape: tuple, attrs: dict) -> tuple:
    n, axis = attrs["group_size"], attrs.get("axis", 0)
    if op == "all_gather":
        return shape[:axis] + (shape[axis] * n,) + shape[axis + 1:]
    if op == "reduce_scatter":
        return shape[:axis] + (shape[axis] // n,) + shape[axis + 1:]
    return shape


def _interp_collective(op: str):
    def run(xs, attrs):
        g = world()
        if attrs["group_size"] != g.size:
            raise CollectiveError(f"{op} was traced for a group of {attrs['group_size']} "
                                  f"processes but runs in one of {g.size}")
        if op == "axis_index":
            return np.array(g.rank, np.int32)
        src = np.asarray(xs[0], order="C")  # NOTE: keeps 0-d (ascontiguousarray does not)
        dst = np.empty(_result_shape(op, src.shape, attrs), src.dtype)
        g.wait(g.start(op, src, dst, attrs), f"{op} (interp backend)")
        return dst
    return run


def graph_impls(graph) -> dict:
    """What `ir.evaluate` runs instead of the references of the collectives of `graph` (none
    when every group is one process, where the reference is exact)."""
    ops = (Op.ALL_REDUCE, Op.ALL_GATHER, Op.REDUCE_SCATTER, Op.BROADCAST, Op.AXIS_INDEX)
    if not any(n.op in ops and n.attrs["group_size"] > 1 for n in graph.nodes):
        return {}
    return {op: _interp_collective(op.value) for op in ops}
