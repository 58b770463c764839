"""Start training from a project checkpoint: its backbone, a new classifier head.

``train.init_from: PATH`` (``default``: the shipped model, ``stgcn.DEFAULT_WEIGHTS``) makes
``stgcn.train`` build the checkpoint's network (streams, graph, next-frame predictor) with the
data's class count and the checkpoint's normalisation, then copy every tensor whose name and shape
match. Each classifier head (``fcn``, one per stream) starts afresh unless the checkpoint has
exactly the same class names; the predictor head is kept. With a handful of takes per class this
converges in minutes where training from scratch does not (``bench/fewshot.py``).

``train.freeze_blocks: N`` also keeps the input BatchNorm and the first N ST-GCN blocks of every
stream fixed, their BatchNorms on their running statistics: no gradients flow through them, which
makes a CPU step cheaper, and tiny batches of one user's takes cannot skew them.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Iterator

from torch import nn

log = logging.getLogger("stgcn.finetune")

# model arguments a fine-tune sets itself (the class count comes from the data), and those it may
# change (a new predictor head or base, causal padding), else the checkpoint's; the others are the checkpoint's architecture
OWN = ("num_class", "dropout")
DECODER = ("predictor_horizon", "predictor_history", "predictor_base")  # only when the run trains the decoder
TUNABLE = OWN + DECODER + ("temporal_padding",)


def resolve(spec: str | Path) -> Path:
    """The checkpoint path of ``train.init_from`` (``default``: the shipped model)."""
    if str(spec) == "default":
        from . import DEFAULT_WEIGHTS

        return Path(DEFAULT_WEIGHTS)
    return Path(spec).expanduser()


def _load(spec: str | Path) -> nn.Module:
    from .checkpoint import load_model

    return load_model(resolve(spec))


def adopt_architecture(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with the model section and normalisation of its ``train.init_from`` checkpoint.

    The network must be the checkpoint's for its weights to fit: streams, graph, channels and the
    predictor come from the checkpoint (the config keeps ``dropout``, and a run that trains the
    decoder its horizon, history and base; the class count comes from the data), and so does the
    normalisation its backbone learned on. A config without
    ``init_from`` is returned unchanged.
    """
    spec = cfg.get("train", {}).get("init_from")
    if not spec:
        return cfg
    source = _load(spec).config
    cfg = copy.deepcopy(cfg)
    # a run that does not train the decoder keeps the checkpoint's, whatever the base config says
    kept = DECODER if cfg.get("train", {}).get("task", "classify") == "classify" else ()
    model = {k: v for k, v in cfg.get("model", {}).items() if k in TUNABLE and k not in kept}
    cfg["model"] = {**{k: v for k, v in source["model"].items() if k not in OWN}, **model}
    data = cfg.setdefault("data", {})
    norm = source.get("normalisation") or {"name": "none"}
    if data.get("normalisation") not in (None, norm):
        log.warning("data.normalisation %s replaced by the starting checkpoint's %s", data["normalisation"], norm)
    data["normalisation"] = norm
    return cfg


def _nets(model: nn.Module) -> Iterator[nn.Module]:
    """The ST-GCN networks of a single- or multi-stream model."""
    nets = getattr(model, "nets", None)
    yield from (nets.values() if nets is not None else [model])


def _eval_batchnorm(module: nn.Module, _inputs: Any) -> None:
    module.train(False)


def freeze(model: nn.Module, blocks: int) -> int:
    """Fix the input BatchNorm and the first ``blocks`` ST-GCN blocks of every stream; the parameters fixed."""
    fixed = 0
    for net in _nets(model):
        parts: list[nn.Module] = [net.data_bn, *net.st_gcn_networks[:blocks]]
        params = [p for part in parts for p in part.parameters()]
        if isinstance(net.edge_importance, nn.ParameterList):
            params += list(net.edge_importance[:blocks])
        for p in params:
            p.requires_grad_(False)
        fixed += len(params)
        for part in parts:
            for m in part.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.register_forward_pre_hook(_eval_batchnorm)  # running statistics, also under model.train()
    return fixed


def init_from_checkpoint(model: nn.Module, spec: str | Path, class_names: list[str] | None = None,
                         freeze_blocks: int = 0) -> dict[str, Any]:
    """Copy the matching tensors of checkpoint ``spec`` into ``model``; a summary of what was done.

    A tensor is copied when its name and shape match. A classifier head (``fcn``) is copied only
    when the checkpoint's class names equal ``class_names``; otherwise it keeps the fresh
    initialisation it was built with.
    """
    source = _load(spec)
    same_classes = class_names is not None and list(source.config.get("class_names") or []) == list(class_names)
    src = source.state_dict()
    dst = model.state_dict()
    params = dict(model.named_parameters())
    copied, fresh = {}, []
    for name, tensor in dst.items():
        head = name.split(".")[-2:-1] == ["fcn"]
        if name in src and src[name].shape == tensor.shape and (same_classes or not head):
            copied[name] = src[name].to(tensor.dtype)
        elif name in params:
            fresh.append(name)
    if not any(not k.endswith("fcn.weight") and k.endswith("weight") for k in copied):
        raise ValueError(f"{resolve(spec)}: no weights fit the model (a checkpoint of another layout?)")
    model.load_state_dict(copied, strict=False)
    fixed = freeze(model, freeze_blocks) if freeze_blocks else 0
    heads = sorted({n.rsplit(".", 1)[0] if n.endswith(("weight", "bias")) else n for n in fresh})
    log.info("initialised from %s: %d of %d tensors copied; new: %s; %d parameters fixed (%d blocks)",
             resolve(spec), len(copied), len(dst), ", ".join(heads) or "none", fixed, freeze_blocks)
    return {"copied": len(copied), "fresh": heads, "fixed": fixed}
