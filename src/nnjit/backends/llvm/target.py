"""The host target: LLVM initialisation, the target machine for this CPU, the O2/O3 pipelines, and
JIT-loading of LLVM IR text or cached object code.

Everything native in nnjit goes through here, so AVX-512 (or whatever the host has) is used
consistently: the target machine is built from `get_host_cpu_name()` and the host's features.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
from dataclasses import dataclass, field

import llvmlite
import llvmlite.binding as llvm

_lock = threading.Lock()

#: The optimization level of model modules. O2 with loop and SLP vectorization and unrolling
#: compiled LeNet's step in 1.11 s CPU against 1.37 s at O3, and the three benchmark steps ran
#: as fast (LeNet 0.98x, LSTM 0.82-0.95x, MLP 0.91-0.93x the O3 time, side by side). The GEMM
#: runtime, compiled once per machine and cached, keeps O3 (`RUNTIME_OPT_LEVEL`).
OPT_LEVEL = 2
RUNTIME_OPT_LEVEL = 3


@functools.cache
def _init() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()
    # Let the loop vectorizer use masked interleaved groups (off by default on x86). A short
    # strided loop, such as a stride-2 pool's 14-wide rows, is vectorized only with its tail
    # folded into masks; without this, every strided load in it becomes a gather. A 2x2
    # stride-2 max pool over LeNet's 28x28 planes ran in 32 us instead of 135.
    llvm.set_option("nnjit", "-enable-masked-interleaved-mem-accesses")


@functools.cache
def host_cpu() -> tuple[str, str]:
    """(cpu name, feature string) of this machine, e.g. ('znver4', '+avx512f,...')."""
    _init()
    feats = llvm.get_host_cpu_features().flatten()
    if "+avx512f" in feats.split(","):
        # LLVM tunes Intel client and server cores (rocketlake, icelake, ...) to prefer 256-bit
        # vectors, which splits every <16 x float> into two ymm halves: the GEMM micro-kernel's
        # 24 zmm accumulators become 48 ymm ones and spill, and loops run at half width. Our
        # kernels are written and tuned for 512-bit registers wherever AVX-512 exists.
        feats += ",-prefer-256-bit"
    return llvm.get_host_cpu_name(), feats


def target_id() -> str:
    """What compiled code depends on: triple, CPU, features and the llvmlite version."""
    cpu, feats = host_cpu()
    return f"{llvm.get_process_triple()}|{cpu}|{feats}|llvmlite-{llvmlite.__version__}"


@functools.cache
def pipeline_id(level: int = OPT_LEVEL) -> str:
    """What the optimization pipeline depends on besides the target: the level and this file
    (where the pipeline options are set), for cache keys."""
    return f"O{level}|{_source_digest()}"


@functools.cache
def _source_digest() -> str:
    import hashlib  # noqa: PLC0415

    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@functools.cache
def target_machine(opt: int = 3) -> llvm.TargetMachine:
    """The target machine for the host CPU (position-independent, so objects can go in a .so)."""
    _init()
    cpu, feats = host_cpu()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=cpu, features=feats, opt=opt, reloc="pic",
                                        codemodel="default", jit=False)


def prepare_module(module_ir: str) -> llvm.ModuleRef:
    """Parse LLVM IR text for the host target and check it (raises RuntimeError when invalid)."""
    _init()
    tm = target_machine()
    mod = llvm.parse_assembly(module_ir)
    mod.triple = llvm.get_process_triple()
    mod.data_layout = str(tm.target_data)
    mod.verify()
    return mod


def optimize(mod: llvm.ModuleRef, level: int = OPT_LEVEL) -> llvm.ModuleRef:
    """Run the standard O`level` pipeline with loop and SLP vectorization, in place."""
    tm = target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    with _lock:
        pb.getModulePassManager().run(mod, pb)
    return mod


def compile_object(module_ir: str, level: int = OPT_LEVEL) -> tuple[bytes, str]:
    """Optimize `module_ir` and emit host object code; returns (object bytes, optimized IR)."""
    mod = optimize(prepare_module(module_ir), level)
    return target_machine().emit_object(mod), str(mod)


def emit_assembly(module_ir: str, level: int = OPT_LEVEL) -> str:
    mod = optimize(prepare_module(module_ir), level)
    return target_machine().emit_assembly(mod)


@dataclass
class JitLibrary:
    """Object code loaded into this process; keeps the engine (and so the code) alive."""

    engine: llvm.ExecutionEngine
    symbols: dict[str, int] = field(default_factory=dict)

    def address(self, name: str) -> int:
        if name not in self.symbols:
            addr = self.engine.get_function_address(name)
            if not addr:
                raise KeyError(f"symbol {name!r} is not defined in the compiled module")
            self.symbols[name] = addr
        return self.symbols[name]

    def function(self, name: str, restype, *argtypes):
        """A ctypes callable for symbol `name`."""
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))


def load_object(obj: bytes) -> JitLibrary:
    """Link object code into the process and return its symbols. Undefined symbols resolve
    against the process (libc, libm, and anything given to `llvm.add_symbol`: the runtime library)."""
    _init()
    with _lock:
        # An empty module anchors the engine; the object file carries all the code.
        anchor = llvm.parse_assembly("")
        anchor.triple = llvm.get_process_triple()
        engine = llvm.create_mcjit_compiler(anchor, _jit_target_machine())
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        engine.run_static_constructors()
    return JitLibrary(engine)


def _jit_target_machine() -> llvm.TargetMachine:
    # NOTE: not cached. MCJIT takes ownership of its target machine and frees it with the
    # engine, so a shared one is a use-after-free (segfault) once any JitLibrary is collected.
    cpu, feats = host_cpu()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=cpu, features=feats, opt=3, reloc="pic",
                                        codemodel="jitdefault", jit=True)


def jit(module_ir: str, level: int = OPT_LEVEL) -> JitLibrary:
    """Optimize, compile and load LLVM IR text in one step."""
    obj, _ = compile_object(module_ir, level)
    return load_object(obj)


def debug_level() -> int:
    """NNJIT_DEBUG: 0 quiet, 1 timings, 2 also prints generated code before compiling."""
    try:
        return int(os.environ.get("NNJIT_DEBUG", "0"))
    except ValueError:
        return 0
