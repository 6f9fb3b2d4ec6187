"""The onnxruntime session: provider choice, batching, the model contract enforced."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS
from ser_stream.errors import ModelError, one_line, shown
from ser_stream.model import (
    CONTRACT_PROPERTY,
    DEFAULT_MODEL,
    INPUT_NAME,
    INPUT_SHAPE,
    OUTPUT_NAME,
    ModelMetadata,
    check_trained_contract,
    load_verified,
)


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot be used here, or None when onnxruntime's CUDA provider, a driver and the CUDA libraries are here.

    Checked before asking for CUDA, because onnxruntime logs an error when it
    is asked for CUDA on a machine without one.
    """
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime has no CUDA provider; install onnxruntime-gpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", None)
    if visible in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if ctypes.util.find_library("cuda") is None and not Path("/proc/driver/nvidia/version").exists():
        return "no NVIDIA driver found"
    failure = cuda_library_failure()
    return None if failure is None else f"the CUDA or cuDNN libraries do not load ({failure})"


def cuda_library_failure() -> str | None:
    """The loader's message for the first library the CUDA provider cannot load, or None; prints nothing."""
    import onnxruntime

    # preload_dlls loads the libraries of the onnxruntime-gpu[cuda,cudnn] extras so the provider finds them; it
    # reports a missing one by printing "Failed to load …" to stdout, not by raising, which would break --json.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preload = getattr(onnxruntime, "preload_dlls", None)
        try:
            if preload is not None:
                preload()
        except Exception as error:  # noqa: BLE001 - a failed preload just means no usable CUDA
            return one_line(error)
    # Loading the provider library as onnxruntime will (its shared helper first, with global symbols) is the real
    # test: preload also complains about a broken copy in the extras' folder that the system's own copy replaces.
    capi = Path(onnxruntime.__file__).parent / "capi"
    provider, helper = capi / "libonnxruntime_providers_cuda.so", capi / "libonnxruntime_providers_shared.so"
    if provider.is_file() and helper.is_file():
        try:
            ctypes.CDLL(str(helper), mode=ctypes.RTLD_GLOBAL)
            ctypes.CDLL(str(provider))
        except OSError as error:
            return str(error).splitlines()[0]
        return None
    failures = [line for line in printed.getvalue().splitlines() if line.startswith("Failed to load ")]
    return failures[0].removeprefix("Failed to load ") if failures else None


def cuda_available() -> bool:
    """True when onnxruntime has its CUDA provider, an NVIDIA driver is present and the CUDA libraries load."""
    return cuda_unavailable_reason() is None


def choose_providers(requested: str = "auto") -> list[str]:
    """``auto``: CUDA when usable, else CPU; ``cuda`` or ``cpu`` forces one."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ModelError(f"provider {requested!r} is not one of auto, cpu, cuda")
    if requested == "cpu":
        return ["CPUExecutionProvider"]
    if requested == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise ModelError(f"--provider cuda: no usable CUDA GPU here ({reason}); use --provider auto or cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_available() else ["CPUExecutionProvider"]


class EmotionModel:
    """A checked ONNX emotion model: spectrograms in, probabilities out, in batches."""

    def __init__(
        self, path: str | Path = DEFAULT_MODEL, provider: str = "auto", max_batch: int = 32
    ) -> None:
        import onnxruntime

        self.path = Path(path)
        self.metadata: ModelMetadata
        self.metadata, model_bytes = load_verified(self.path)  # loaded from the bytes hashed, external data refused
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        onnxruntime.set_default_logger_severity(4)  # a CUDA provider that fails to load is said once, by us, not logged in red
        providers = choose_providers(provider)  # outside the try: a provider refusal is not the model file's fault
        self.cuda_not_used: str | None = None  # why --provider auto runs on the CPU where the check found CUDA usable
        try:
            self.session = self._session(model_bytes, options, providers)
        except Exception as error:  # onnxruntime raises its own unexported types
            if providers[0] != "CUDAExecutionProvider":
                raise self._unloadable(error) from None
            try:
                self.session = self._session(model_bytes, options, ["CPUExecutionProvider"])
            except Exception as cpu_error:  # noqa: BLE001 - not on the CPU either: the model's fault, not CUDA's
                raise self._unloadable(cpu_error) from None
            if provider == "cuda":
                raise ModelError(f"--provider cuda: onnxruntime could not start its CUDA provider here ({one_line(error)}); "
                                 "use --provider auto or cpu") from None
            self.cuda_not_used = f"onnxruntime could not start its CUDA provider ({one_line(error)}); running on the CPU"
        if providers[0] == "CUDAExecutionProvider" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            if provider == "cuda":  # the check above misjudged, and onnxruntime left CUDA out without raising
                raise ModelError("--provider cuda: onnxruntime could not start its CUDA provider here; use --provider auto or cpu")
            self.cuda_not_used = self.cuda_not_used or "onnxruntime could not start its CUDA provider; running on the CPU"
        check_trained_contract(self.path, self.metadata, self.session.get_modelmeta().custom_metadata_map.get(CONTRACT_PROPERTY))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise ModelError(
                f"{shown(self.path)}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"found {[i.name for i in inputs]} → {[o.name for o in outputs]}"
            )
        if list(inputs[0].shape[1:]) != list(INPUT_SHAPE):
            raise ModelError(f"{shown(self.path)}: input shape {inputs[0].shape} is not [N, {', '.join(map(str, INPUT_SHAPE))}]")
        if isinstance(inputs[0].shape[0], int):  # batch 2 passed the probe below and failed every file; batch 1 failed in it
            raise ModelError(f"{shown(self.path)}: its input's batch dimension is fixed at {inputs[0].shape[0]}; "
                             "export it with a dynamic batch (a named first dimension, N)")
        if inputs[0].type != "tensor(float)":
            raise ModelError(f"{shown(self.path)}: input {INPUT_NAME!r} is {inputs[0].type}, not float32 (tensor(float))")
        output = next(o for o in outputs if o.name == OUTPUT_NAME)
        if list(output.shape[1:]) != [len(EMOTIONS)] or output.type != "tensor(float)":
            raise ModelError(
                f"{shown(self.path)}: output {OUTPUT_NAME!r} is {output.type} of shape {output.shape}, "
                f"not float32 [N, {len(EMOTIONS)}] (one probability per emotion)"
            )
        self.max_batch = max_batch
        self.provider = self.session.get_providers()[0]
        self._check_outputs_are_probabilities()

    @staticmethod
    def _session(model_bytes: bytes, options: Any, providers: list[str]) -> Any:
        """An onnxruntime session on ``providers``, without onnxruntime's own fallback: where CUDA failed at session
        creation, it print()ed an 'EP Error … Falling back to CPU' banner to stdout, among classify --json's and the
        monitor's JSON lines (and would again for a provider failing mid-run)."""
        import onnxruntime

        return onnxruntime.InferenceSession(model_bytes, sess_options=options, providers=providers, enable_fallback=0)

    def _unloadable(self, error: Exception) -> ModelError:
        """The one line for a model onnxruntime cannot load."""
        if "external data" in str(error).lower():
            return ModelError(f"{shown(self.path)}: keeps its weights in an external data file, which the sha256 in its "
                              "metadata does not cover; export the model as one file")
        return ModelError(f"{shown(self.path)}: onnxruntime cannot load it ({one_line(error)})")

    def _check_outputs_are_probabilities(self) -> None:
        """Run a black and a grey input: a network exported without its softmax (raw scores) once loaded and
        published confidences of 90 and negative 'probabilities'. The run also warms the session up."""
        probe = np.stack([np.zeros(INPUT_SHAPE, np.float32), np.full(INPUT_SHAPE, 0.5, np.float32)])
        outputs = self.predict(probe)
        sums = outputs.sum(axis=1)
        # Loose enough for an int8 model, whose outputs are quantised in steps of 1/255 and sum to 1 within ~0.02.
        if not np.all(np.isfinite(outputs)) or outputs.min() < -0.01 or outputs.max() > 1.01 or np.abs(sums - 1).max() > 0.05:
            raise ModelError(
                f"{shown(self.path)}: its outputs are not probabilities (on a test input they range {outputs.min():.3g} to "
                f"{outputs.max():.3g} and sum to {sums.max():.3g}); export the network with its softmax"
            )

    @property
    def provider_name(self) -> str:
        return "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    def predict(self, spectrograms: NDArray[np.float32]) -> NDArray[np.float32]:
        """[N, 260, 270] or [N, 260, 270, 1] → [N, 8] probabilities, run in batches of ``max_batch``."""
        batch = np.asarray(spectrograms, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[..., None]
        if batch.ndim != 4 or batch.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected [N, {', '.join(map(str, INPUT_SHAPE))}] input, got {batch.shape}")
        try:
            outputs = [
                self.session.run([OUTPUT_NAME], {INPUT_NAME: batch[start : start + self.max_batch]})[0]
                for start in range(0, batch.shape[0], self.max_batch)
            ]
        except Exception as error:  # onnxruntime's own unexported types: at load, or mid-run (a GPU out of memory),
            raise ModelError(f"{shown(self.path)}: onnxruntime cannot run it ({one_line(error)})") from None  # a line per file
        if not outputs:
            return np.zeros((0, len(EMOTIONS)), dtype=np.float32)
        probabilities = np.concatenate(outputs).astype(np.float32)
        if probabilities.shape != (batch.shape[0], len(EMOTIONS)):  # one that averaged its batch gave one row for two
            raise ModelError(f"{shown(self.path)}: gave outputs of shape {list(probabilities.shape)} for {batch.shape[0]} inputs; "
                             f"export it with one row of {len(EMOTIONS)} per input")
        return probabilities
