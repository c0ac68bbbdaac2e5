"""torch.nn.Module -> ONNX (torch dynamo exporter) -> verified IR graph.

The module may live on the meta device (no weight materialised): the exported
ModelProto then carries every parameter as an initializer with name, dtype and
shape but no data (an external-data placeholder whose file never exists).
wafercc needs only names and shapes of the weights; the lifter reads small
constants (eps, axes, scales) from exporter ``Constant`` nodes, which stay
inline.  Small non-persistent buffers of Hugging Face models (rotary
``inv_freq``, BERT ``position_ids``) are recomputed on the CPU with the model's
own ``_init_weights`` so their values stay visible to the lifter.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import traceback
import warnings
from typing import Any, Sequence

import onnx
import torch

from ..errors import FrontendError, WaferccError, one_line
from ..ir import Graph
from .onnx_frontend import lower_onnx_model
from .torch_inputs import bind, dynamic_shapes, keywords_named, split_inputs

DEFAULT_OPSET = 18
# Meta buffers up to this many elements are recomputed on the CPU (see module doc).
SMALL_BUFFER = 1 << 20
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _export_error(e: BaseException, module: torch.nn.Module) -> str:
    """An exporter failure in one line: its innermost cause with a message (what went wrong, not
    the exporter's banner) and the line of the module's own source it came from, if any."""
    chain = [e]
    while len(chain) < 20:
        nxt = chain[-1].__cause__ or (None if chain[-1].__suppress_context__ else chain[-1].__context__)
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    root = next((c for c in reversed(chain) if str(c).strip()), e)
    try:
        path = inspect.getsourcefile(type(module))
    except TypeError:  # a class defined in C or at an interactive prompt
        path = None
    frames = [f for c in chain for f in traceback.extract_tb(c.__traceback__) if path and f.filename == path]
    at = f" (at {os.path.basename(path)}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return one_line(root, 240 - len(at)) + at


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress prints, warnings and log records."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx",
                                              "torch._export", "torch.onnx._internal.exporter._registration")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _is_meta(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta"


def _hf_models(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Hugging Face PreTrainedModel instances inside ``module`` (outermost first)."""
    try:
        from transformers import PreTrainedModel
    except Exception:  # pragma: no cover - transformers is a dependency
        return []
    return [m for m in module.modules() if isinstance(m, PreTrainedModel)]


def meta_buffer_values(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU values of small meta-device buffers, recomputed by the owning Hugging Face
    model's ``_init_weights`` (which knows every rotary-embedding variant).  Keys
    are buffer names relative to ``module``; buffers no initialiser writes are left out.
    The module itself is not changed."""
    owners = _hf_models(module)
    if not owners:
        return {}
    init = owners[0]
    out: dict[str, torch.Tensor] = {}
    for mod_name, sub in module.named_modules():
        metas = {n: b for n, b in sub.named_buffers(recurse=False)
                 if _is_meta(b) and b.numel() <= SMALL_BUFFER}
        if not metas:
            continue
        saved = dict(metas)
        sentinels = {}
        try:
            for n, b in metas.items():
                fill = -7 if b.dtype in _INT_DTYPES else float("nan")
                if b.dtype == torch.bool:
                    continue
                cpu = torch.full(b.shape, fill, dtype=b.dtype, device="cpu")
                sentinels[n] = cpu
                sub._buffers[n] = cpu
            if not sentinels:
                continue
            with _quiet(), torch.no_grad():
                init._init_weights(sub)
            for n, cpu in sentinels.items():
                written = not (torch.isnan(cpu).any() if cpu.is_floating_point() else (cpu == -7).all())
                if written:
                    out[f"{mod_name}.{n}" if mod_name else n] = cpu.clone()
        except Exception:
            pass  # no initialiser for this module: its buffers stay placeholders
        finally:
            for n, b in saved.items():
                sub._buffers[n] = b
    return out


def _strip_meta_data(model, buffers: dict[str, torch.Tensor]) -> int:
    """Replace initializers without serialisable data by external-data placeholders
    (name, dtype, shape kept; location ``<graph>.weights``, running offsets).
    Returns the number of placeholders made."""
    import onnx_ir as ir

    graph = model.graph
    location = f"{graph.name or 'model'}.weights"
    offset = made = 0
    for name, v in list(graph.initializers.items()):
        tv = v.const_value
        raw = getattr(tv, "raw", None)
        if name in buffers and (tv is None or _is_meta(raw)):
            v.const_value = ir.tensor(buffers[name].numpy() if buffers[name].dtype != torch.bfloat16
                                      else buffers[name], name=name)
            continue
        if tv is not None and not _is_meta(raw):
            continue
        shape = v.shape if v.shape is not None else (tv.shape if tv is not None else None)
        dtype = v.dtype if v.dtype is not None else (tv.dtype if tv is not None else None)
        if shape is None or dtype is None:
            raise FrontendError(f"initializer '{name}' has no data, shape or dtype")
        nbytes = int(tv.nbytes) if tv is not None else 0
        v.const_value = ir.ExternalTensor(location, offset=offset, length=nbytes, dtype=dtype,
                                          shape=ir.Shape(list(shape)), name=name)
        offset += nbytes
        made += 1
    return made


def to_onnx(module: torch.nn.Module, example_inputs: Any, *, opset: int = DEFAULT_OPSET,
            input_names: Sequence[str] | None = None, dynamic: bool = True) -> onnx.ModelProto:
    """Export ``module`` with the torch dynamo exporter (``optimize=False``: weight
    names survive).  ``example_inputs`` takes any form of :mod:`.torch_inputs` (positional
    args, keyword args, or both).  Dims 0 and 1 of every 2-D integer input are dynamic
    (``batch``, ``seq``) unless ``dynamic`` is False.  Meta-device weights become
    data-less placeholders."""
    import onnx_ir as ir

    if not isinstance(module, torch.nn.Module):
        raise FrontendError(f"expected a torch.nn.Module, got {type(module).__name__}")
    args, kwargs = split_inputs(example_inputs, where=type(module).__name__)
    buffers = meta_buffer_values(module)
    options: dict[str, Any] = dict(dynamo=True, optimize=False, opset_version=opset, verbose=False)
    if input_names:
        options["input_names"] = list(input_names)
    was_training = module.training
    module.eval()
    try:
        with keywords_named(module, kwargs), _quiet(), torch.no_grad():
            if dynamic:
                options["dynamic_shapes"] = dynamic_shapes(bind(module, args, kwargs))
            prog = torch.onnx.export(module, args, kwargs=kwargs, **options)
    except WaferccError:
        raise
    except Exception as e:
        raise FrontendError(f"torch.onnx.export failed: {_export_error(e, module)}",
                            where=type(module).__name__) from None
    finally:
        module.train(was_training)
    if prog is None:
        raise FrontendError("torch.onnx.export returned no program", where=type(module).__name__)
    _strip_meta_data(prog.model, buffers)
    try:
        return ir.serde.serialize_model(prog.model)
    except Exception as e:
        raise FrontendError(f"cannot serialise the exported model: {one_line(e)}",
                            where=type(module).__name__) from None


def compile_module(module: torch.nn.Module, example_inputs: Any, *, name: str = "model",
                   opset: int = DEFAULT_OPSET, input_names: Sequence[str] | None = None,
                   dynamic: bool = True) -> Graph:
    """Export ``module`` (real or meta weights) and lower it to verified IR."""
    proto = to_onnx(module, example_inputs, opset=opset, input_names=input_names, dynamic=dynamic)
    graph = lower_onnx_model(proto, name, where=name)
    # registered buffers the IR holds as weights (XGLM's sinusoid table): resident, not parameters
    buffers = {n for n, _ in module.named_buffers()}
    held = sorted(v.name for v in graph.weights() if v.name in buffers)
    if held:
        graph.meta["buffers"] = held
    return graph
