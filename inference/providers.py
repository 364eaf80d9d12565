"""Choosing onnxruntime execution providers explicitly: CUDA (or TensorRT, if asked) only when a
GPU, its driver and the CUDA libraries are really usable here, otherwise the CPU.

`onnxruntime-gpu` lists TensorRT and CUDA even on a machine with neither; asking for them there logs
errors and silently falls back. So each step is checked quietly first, and a probe session proves
the provider before any model is loaded with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from inference.errors import ProviderUnavailable

log = logging.getLogger("castnet.inference")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
PREFERENCES = ("auto", "cpu", "cuda", "tensorrt")
ORT_ERROR = 3  # onnxruntime log severity: 0 verbose .. 3 error, 4 fatal


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    """The providers sessions are created with, the threads they use, and why this choice."""

    name: str  # "cpu", "cuda" or "tensorrt"
    providers: tuple[tuple[str, dict[str, str]], ...]
    threads: int
    device_id: int
    reason: str

    @property
    def gpu(self) -> bool:
        return self.name != "cpu"

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.log_severity_level = ORT_ERROR
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # always a number: left at 0, onnxruntime starts a thread per physical core and pins each
        # pool thread to a core of its own, where it then waits behind whatever else runs on that
        # core (a pipeline's decoding) instead of moving to a free one
        options.intra_op_num_threads = self.threads or physical_cores()
        options.inter_op_num_threads = 1
        # idle pool threads sleep instead of spinning: the pipeline's other stages need the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def create_session(self, model: bytes) -> ort.InferenceSession:
        return ort.InferenceSession(
            model,
            sess_options=self.session_options(),
            providers=[name for name, _ in self.providers],
            provider_options=[opts for _, opts in self.providers],
        )


def choose_providers(
    prefer: str = "auto", *, threads: int = 0, device_id: int = 0
) -> ProviderChoice:
    """`auto`: CUDA when usable, else CPU. `cuda`/`tensorrt`: that or `ProviderUnavailable`."""
    if prefer not in PREFERENCES:
        raise ProviderUnavailable(f"unknown provider {prefer!r}; use one of {PREFERENCES}")
    if threads < 0:
        raise ProviderUnavailable("threads must be >= 0 (0: one per physical core)")
    cpu: tuple[tuple[str, dict[str, str]], ...] = ((CPU, {}),)
    if prefer == "cpu":
        return ProviderChoice("cpu", cpu, threads, device_id, "CPU requested")
    cuda_ok, why = cuda_status(device_id)
    cuda_opts = {"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC"}
    if prefer == "tensorrt":
        trt_ok, trt_why = tensorrt_status(device_id) if cuda_ok else (False, why)
        if not trt_ok:
            raise ProviderUnavailable(f"TensorRT is not usable here: {trt_why}")
        trt = (TENSORRT, {"device_id": str(device_id)})
        return ProviderChoice(
            "tensorrt", (trt, (CUDA, cuda_opts), *cpu), threads, device_id, trt_why
        )
    if cuda_ok:
        return ProviderChoice("cuda", ((CUDA, cuda_opts), *cpu), threads, device_id, why)
    if prefer == "cuda":
        raise ProviderUnavailable(f"CUDA is not usable here: {why}")
    return ProviderChoice("cpu", cpu, threads, device_id, why)


def usable_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity where the platform tells it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return set(affinity(0)) if affinity is not None else set(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads of one core count
    once), as onnxruntime counts them for its default thread pool; where Linux does not say which
    core a CPU belongs to, it counts as one."""
    cores = set()
    for cpu in usable_cpus():
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        for name in ("core_cpus_list", "thread_siblings_list"):  # the second: kernels before 5.3
            with contextlib.suppress(OSError):
                cores.add(topology.joinpath(name).read_text().strip())
                break
        else:
            cores.add(str(cpu))
    return max(1, len(cores))


@functools.cache
def cuda_status(device_id: int = 0) -> tuple[bool, str]:
    """(usable, reason): driver, device, CUDA libraries and a probe session, checked in order."""
    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA provider"
    count, why = cuda_device_count()
    if count <= device_id:
        return False, why or f"CUDA device {device_id} does not exist ({count} found)"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        ort.preload_dlls(directory="")  # CUDA/cuDNN from nvidia-* wheels, when installed
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return False, f"CUDA libraries are missing: {exc}"
    return _probe(CUDA, {"device_id": str(device_id)})


@functools.cache
def tensorrt_status(device_id: int = 0) -> tuple[bool, str]:
    if TENSORRT not in ort.get_available_providers():
        return False, "this onnxruntime build has no TensorRT provider"
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return False, f"TensorRT libraries are missing: {exc}"
    return _probe(TENSORRT, {"device_id": str(device_id)})


def cuda_device_count() -> tuple[int, str]:
    """(devices the NVIDIA driver sees, why): 0 without a driver or a usable GPU."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no NVIDIA driver (libcuda.so.1 not loadable)"
    if (code := driver.cuInit(0)) != 0:
        return 0, f"the NVIDIA driver has no usable GPU (cuInit error {code})"
    count = ctypes.c_int(0)
    if (code := driver.cuDeviceGetCount(ctypes.byref(count))) != 0:
        return 0, f"cuDeviceGetCount error {code}"
    return count.value, f"{count.value} CUDA device(s)"


def _probe(provider: str, options: dict[str, Any]) -> tuple[bool, str]:
    """Run a one-node model on `provider` and check that it was not silently replaced by the CPU."""
    session_options = ort.SessionOptions()
    session_options.log_severity_level = ORT_ERROR
    try:
        session = ort.InferenceSession(
            probe_model(), session_options, providers=[provider], provider_options=[options]
        )
        session.run(None, {"x": _ones()})
    except Exception as exc:  # onnxruntime raises its own untyped errors here
        return False, f"{provider} failed a probe session: {exc}"
    if session.get_providers()[0] != provider:
        return False, f"{provider} fell back to {session.get_providers()[0]}"
    return True, f"{provider} passed a probe session"


@functools.cache
def probe_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _ones() -> Any:
    import numpy as np

    return np.ones((1, 4), np.float32)
