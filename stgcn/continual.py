"""Continual ST-GCN (CoST-GCN, Hedegaard et al. 2022): the same network, one frame at a time.

A regular ST-GCN recomputes its whole window for every result although the window moved by a
frame. Its only temporal operations are the 9x1 temporal convolutions (zero-padded by 4, some
with stride 2) and the global average pool, so each block can instead keep the last 8 inputs
of its temporal convolution and the last 4 inputs of its residual, and compute one output per
new frame (every 2nd or 4th frame after a stride), centred 4 of its input steps in the past;
the pool becomes a running mean over the last ``window / 4`` outputs. The graph convolutions,
BatchNorms and weights are the regular model's own modules (no copy, no new parameters).

- With zero state (a new person) and, at the end, 4 zero "padding" steps through each block
  (:meth:`ContinualSTGCN.flush`), the output equals the regular model's on the same frames:
  the zero state is the left padding, the flush is the right padding.
- Without the flush (live) each result sees the recent frames with a delay of
  :attr:`ContinualSTGCN.delay` input frames at the last block: the price of never recomputing.
  A causal network (``temporal_padding: causal``, :class:`~stgcn.model.TemporalConv`) has none:
  its live answer is the regular model's on the frames stepped, and it needs no flush.

State lives in tensors with one row per *slot* (a person of a stream), so a batch of any rows
steps together, each row at its own phase of the strides. The continual-inference library
(``continual``) implements these layers too, but keeps one state per module for the whole batch,
stepping in lockstep; serving needs rows that join, leave and step at their own times.

Two ways to step a set of rows, the same function (equal to 1e-5):

- **subsetting** (the CPU default): after a stride only the rows whose block produced an output
  go on, so each row costs only its own work. Every step has its own number of rows, and it asks
  the GPU whether any row goes on (a host sync per block).
- **fixed shapes** (``fixed=True``, the CUDA default): the rows are padded to a bucket size
  (:func:`bucket`) with a scratch state row, every block is computed for all of them, and a
  boolean mask says which rows took an input; state and pool are updated only where it is true.
  So a step runs on a few shapes only (cuDNN plans once per bucket), never waits for the GPU,
  and on CUDA is replayed from one CUDA graph per bucket. It computes the rows that are not due
  after the stride-2 blocks: on this 2-core CPU it is slower than subsetting (see
  :class:`ContinualSTGCN`), on a GPU the work is not what costs.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .model import STGCN, STGCNBlock, first_frames
from .streams import MultiStream, fuse, stream_input

log = logging.getLogger(__name__)

PAD = 4  # each temporal convolution's zero padding (kernel 9): its delay in input steps
MIN_BUCKET = 8  # the smallest number of rows a fixed-shape step runs on
# Outputs of the last block a centred network's state needs before it answers: its first outputs
# are mostly the zero state's edge (docs/continual.md). A causal network's state answers from its
# first output: the regular model's answer on the frames so far.
READY_OUTPUTS = 12


def bucket(n: int) -> int:
    """Rows a fixed-shape step of ``n`` rows runs on: the next power of two, at least :data:`MIN_BUCKET`."""
    return max(MIN_BUCKET, 1 << max(n - 1, 0).bit_length())


def pooled_length(window: int, strides: list[int]) -> int:
    """Temporal length of the last block's output for ``window`` input frames."""
    for s in strides:
        window = (window - 1) // s + 1
    return window


class ContinualSTGCN(nn.Module):
    """One :class:`~stgcn.model.STGCN` (eval mode) stepped frame by frame, ``slots`` rows of state.

    :meth:`step` takes one normalised frame per row; :meth:`logits` reads the running pool of
    each row (:meth:`ready` says which have an output yet); :meth:`flush` pads a clip's end like
    the regular model does; :meth:`reset` empties rows (a new person).

    ``fixed`` picks how a step runs (module docstring): ``None`` takes fixed shapes on CUDA and
    subsetting elsewhere. Besides the ``slots`` rows the state keeps one scratch row
    (:attr:`scratch`), which padding rows write to; nothing reads it as a person's state.
    """

    def __init__(self, net: STGCN, window: int, slots: int = 8, fixed: bool | None = None) -> None:
        super().__init__()
        self.net = net.eval()
        self.blocks: list[STGCNBlock] = list(net.st_gcn_networks)
        self.strides = [int(b.tcn[2].stride[0]) for b in self.blocks]
        kernels = {int(b.tcn[2].kernel_size[0]) for b in self.blocks}
        if kernels != {2 * PAD + 1}:
            raise ValueError(f"continual ST-GCN expects 9x1 temporal convolutions, found kernels {kernels}")
        # input steps between a block's newest input and its output's centre: the centred padding's
        # 4, none for a causal network (stgcn.model.TemporalConv), whose outputs end at their input
        self.lag = 0 if net.causal else PAD
        self.window = int(window)
        self.pool_len = pooled_length(self.window, self.strides)
        self.slots = 0
        self._empty: torch.Tensor | None = None  # the logits of an empty person slot (computed once)
        p = next(self.net.parameters())
        self.fixed = p.device.type == "cuda" if fixed is None else bool(fixed)
        self._grow(slots)

    @property
    def scratch(self) -> int:
        """The state row that padding rows of a fixed-shape step write to (garbage, never read)."""
        return self.slots

    def _grow(self, slots: int) -> None:
        """(Re)allocate state for ``slots`` rows and the scratch row, keeping the rows there are."""
        p = next(self.net.parameters())
        v = self.net.A.shape[-1]

        def zeros(*shape: int, dtype: torch.dtype = p.dtype) -> torch.Tensor:
            return torch.zeros(slots + 1, *shape, dtype=dtype, device=p.device)

        old = self.__dict__.get("_state")
        state = {
            "tcn": [zeros(b.tcn[2].in_channels, 2 * PAD, v) for b in self.blocks],
            "res": [zeros(b.gcn.conv.in_channels, self.lag, v) if b.residual is not None else None for b in self.blocks],
            "seen": [zeros(dtype=torch.long) for _ in self.blocks],  # inputs each block has taken
            "pool": zeros(self.pool_len, self.blocks[-1].tcn[2].out_channels),
            "outputs": zeros(dtype=torch.long),  # outputs of the last block so far
            "feat": zeros(self.blocks[-1].tcn[2].out_channels, v),  # the newest one (predictor input)
        }
        if old is not None:
            n = self.slots
            for key, new in state.items():
                olds = old[key] if isinstance(new, list) else [old[key]]
                for a, b in zip(new if isinstance(new, list) else [new], olds):
                    if a is not None:
                        a[:n] = b[:n]
        self._state, self.slots = state, slots

    def ensure(self, slots: int) -> None:
        """Room for at least ``slots`` rows (state doubles as needed)."""
        if slots > self.slots:
            self._grow(max(slots, 2 * self.slots))

    def reset(self, rows: torch.Tensor) -> None:
        """Empty the state of ``rows`` (a person who starts now)."""
        for key, value in self._state.items():
            for t in value if isinstance(value, list) else [value]:
                if t is not None:
                    t[rows] = 0

    @property
    def delay(self) -> int:
        """Input frames between a new frame and the centre of the newest last-block output."""
        delay, rate = 0, 1
        for s in self.strides:
            delay += self.lag * rate
            rate *= s
        return delay

    def _block(self, b: int, x: torch.Tensor | None, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``b`` takes one input per row (``x`` ``(R, C, 1, V)``; ``None``: a padding step);
        returns the outputs and the rows that produced one (after a stride, not every row)."""
        block, st = self.blocks[b], self._state
        tcn_in = st["tcn"][b][rows]
        if x is None:
            g = tcn_in.new_zeros(tcn_in.shape[:2] + (1, tcn_in.shape[-1]))
        else:
            g = block.tcn[1](block.tcn[0](block.gcn(x, self.net.A * self.net.edge_importance[b])))
        win = torch.cat([tcn_in, g], dim=2)  # (R, C, 9, V): the convolution's receptive field
        st["tcn"][b][rows] = win[:, :, 1:]
        res = None
        if st["res"][b] is not None:
            res_in = st["res"][b][rows]
            res = torch.cat([res_in, torch.zeros_like(res_in[:, :, :1]) if x is None else x], dim=2)
            st["res"][b][rows] = res[:, :, 1:]
        seen = st["seen"][b][rows]
        st["seen"][b][rows] = seen + 1
        ready = (seen >= self.lag) & ((seen - self.lag) % self.strides[b] == 0)
        if not bool(ready.any()):
            return win[:0, :, :1], rows[:0]
        if not bool(ready.all()):
            win, rows = win[ready], rows[ready]
            res = None if res is None else res[ready]
        conv = block.tcn[2]
        y = block.tcn[3](F.conv2d(win, conv.weight, conv.bias))
        if res is not None:
            y = y + block.residual(res[:, :, :1])  # the input at the output's centre
        return block.relu(y), rows

    def outputs_after(self, frames: int) -> int:
        """Outputs of the last block after ``frames`` inputs from zero state (no flush): what
        :meth:`ready` reads, known on the host without asking the device."""
        n = int(frames)
        for s in self.strides:
            n = 0 if n <= self.lag else (n - self.lag - 1) // s + 1
        return n

    def _block_masked(self, b: int, x: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``b`` on all ``rows``, of which only those where ``mask`` is true take the input
        ``x``; returns an output for every row and the mask of the rows whose output is real."""
        block, st = self.blocks[b], self._state
        keep = mask[:, None, None, None]
        tcn_in = st["tcn"][b][rows]
        g = block.tcn[1](block.tcn[0](block.gcn(x, self.net.A * self.net.edge_importance[b])))
        win = torch.cat([tcn_in, g], dim=2)
        st["tcn"][b][rows] = torch.where(keep, win[:, :, 1:], tcn_in)
        res = None
        if st["res"][b] is not None:
            res_in = st["res"][b][rows]
            res = torch.cat([res_in, x], dim=2)
            st["res"][b][rows] = torch.where(keep, res[:, :, 1:], res_in)
        seen = st["seen"][b][rows]
        st["seen"][b][rows] = seen + mask.long()
        ready = mask & (seen >= self.lag) & ((seen - self.lag) % self.strides[b] == 0)
        conv = block.tcn[2]
        y = block.tcn[3](F.conv2d(win, conv.weight, conv.bias))
        if res is not None:
            y = y + block.residual(res[:, :, :1])
        return block.relu(y), ready

    def _run_masked(self, x: torch.Tensor, rows: torch.Tensor) -> None:
        """A fixed-shape step: every block on all rows, the mask carried from block to block."""
        mask = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        for b in range(len(self.blocks)):
            x, mask = self._block_masked(b, x, rows, mask)
        st = self._state
        n = st["outputs"][rows]
        slot = n % self.pool_len
        st["pool"][rows, slot] = torch.where(mask[:, None], x.mean(dim=(2, 3)), st["pool"][rows, slot])
        st["outputs"][rows] = n + mask.long()
        st["feat"][rows] = torch.where(mask[:, None, None], x[:, :, 0], st["feat"][rows])

    def pad(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (rows first) and ``rows`` padded to :func:`bucket` rows: zeros into the scratch row."""
        n = len(rows)
        extra = bucket(n) - n
        if not extra:
            return x, rows
        x = torch.cat([x, x.new_zeros((extra,) + tuple(x.shape[1:]))])
        return x, torch.cat([rows, rows.new_full((extra,), self.scratch)])

    def _run(self, first: int, x: torch.Tensor | None, rows: torch.Tensor) -> None:
        for b in range(first, len(self.blocks)):
            if not len(rows):
                return
            x, rows = self._block(b, x, rows)
        if len(rows):
            st = self._state
            n = st["outputs"][rows]
            st["pool"][rows, n % self.pool_len] = x.mean(dim=(2, 3))
            st["outputs"][rows] = n + 1
            st["feat"][rows] = x[:, :, 0]

    @torch.no_grad()
    def step(self, x: torch.Tensor, rows: torch.Tensor, fixed: bool | None = None) -> None:
        """One normalised frame ``(R, C, V)`` (one person each) into ``rows`` (distinct, except the
        scratch row); ``fixed`` overrides :attr:`fixed` for this step."""
        fixed = self.fixed if fixed is None else fixed
        if fixed:
            x, rows = self.pad(x, rows)
        r, c, v = x.shape
        h = self.net.data_bn(x.permute(0, 2, 1).reshape(r, v * c)).view(r, v, c).permute(0, 2, 1)
        if fixed:
            self._run_masked(h.unsqueeze(2).contiguous(), rows)
        else:
            self._run(0, h.unsqueeze(2).contiguous(), rows)

    @torch.no_grad()
    def flush(self, rows: torch.Tensor) -> None:
        """End the clip of ``rows``: 4 zero steps through each block, as the regular model's right
        padding (none for a causal network); afterwards :meth:`logits` equal the regular model's
        on the frames stepped."""
        for b in range(len(self.blocks)):
            for _ in range(self.lag):
                out, done = self._block(b, None, rows)
                self._run(b + 1, out, done)  # after the last block: into the pool

    def ready(self, rows: torch.Tensor, outputs: int = 1) -> torch.Tensor:
        """Which rows have a result: their last block produced at least ``outputs`` outputs (a pool
        of a few outputs is mostly the zero state's left edge)."""
        return self._state["outputs"][rows] >= outputs

    @torch.no_grad()
    def logits(self, rows: torch.Tensor, empty_slots: int = 0) -> torch.Tensor:
        """Class scores ``(R, K)`` from each row's last ``window / 4`` outputs (zeros: no output yet).

        ``empty_slots``: how many empty person slots the regular model would average with this
        person (it pools over all its slots; an empty one reads an all-zero window), so that
        one person in a model trained with several slots scores as in the regular model.
        """
        st = self._state
        n = st["outputs"][rows].clamp(max=self.pool_len, min=1).to(st["pool"].dtype)
        pooled = st["pool"][rows].sum(dim=1) / n[:, None]
        out = self.net.fcn(pooled[:, :, None, None]).flatten(1)
        return self.with_empty(out, empty_slots)

    def with_empty(self, logits: torch.Tensor, empty_slots: int) -> torch.Tensor:
        """One person slot's ``logits`` averaged with ``empty_slots`` empty slots' (an all-zero window's,
        computed once), as the regular model averages its slots' pooled features before its linear
        classifier."""
        if not empty_slots:
            return logits
        if self._empty is None:
            p = next(self.net.parameters())
            c, v = self.net.data_bn.num_features // self.net.A.shape[-1], self.net.A.shape[-1]
            self._empty = self.net(torch.zeros(1, c, self.window, v, 1, dtype=p.dtype, device=p.device))
        return (logits + empty_slots * self._empty) / (1 + empty_slots)

    @torch.no_grad()
    def next_frame(self, rows: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
        """The predictor head on each row's newest last-block output and its last frames (``recent``)."""
        if self.net.predictor is None:
            raise RuntimeError("this model has no next-frame predictor head")
        return self.net.predictor(self._state["feat"][rows], recent)


class Continual(nn.Module):
    """A regular model (one ST-GCN or a :class:`~stgcn.streams.MultiStream`) in continual form.

    Takes normalised frames as the regular model takes normalised windows; each input stream's
    view of the newest frame is computed from it and the frame before, by the same
    :func:`~stgcn.streams.stream_input`, and the streams' scores are fused as in the regular model.
    """

    def __init__(self, model: STGCN | MultiStream, window: int, slots: int = 8, fixed: bool | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        multi = isinstance(model, MultiStream)
        self.names = model.names if multi else ["joint"]
        nets = [model.nets[n] for n in self.names] if multi else [model]
        self.nets = nn.ModuleList(ContinualSTGCN(net, window, slots, fixed) for net in nets)
        self.parent = model.parent_index if multi else None
        self.coords = model.coords if multi else None
        p = next(model.parameters())
        self.graphed = self.fixed and p.device.type == "cuda"  # fixed-shape steps replayed from CUDA graphs
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphed else None

    @property
    def first(self) -> ContinualSTGCN:
        return self.nets[0]

    @property
    def delay(self) -> int:
        return self.first.delay

    @property
    def fixed(self) -> bool:
        """Whether steps run on fixed shapes (:class:`ContinualSTGCN`)."""
        return self.first.fixed

    @fixed.setter
    def fixed(self, value: bool) -> None:
        for net in self.nets:
            net.fixed = bool(value)

    @property
    def scratch(self) -> int:
        return self.first.scratch

    def outputs_after(self, frames: int) -> int:
        return self.first.outputs_after(frames)

    @property
    def ready_outputs(self) -> int:
        """Outputs of the last block a state needs before it answers (:data:`READY_OUTPUTS`; one for
        a causal network)."""
        return READY_OUTPUTS if self.delay else 1

    def warm_up(self, outputs: int | None = None) -> int:
        """Frames a state needs from zero before it has ``outputs`` (default :attr:`ready_outputs`)."""
        outputs = self.ready_outputs if outputs is None else outputs
        frames = 1
        while self.outputs_after(frames) < outputs:
            frames += 1
        return frames

    def ensure(self, slots: int) -> None:
        before = self.first.slots
        for net in self.nets:
            net.ensure(slots)
        if self.first.slots != before:
            self._graphs.clear()  # they wrote to the old state tensors

    def reset(self, rows: torch.Tensor) -> None:
        for net in self.nets:
            net.reset(rows)

    @torch.no_grad()
    def step(self, frames: torch.Tensor, rows: torch.Tensor, first: torch.Tensor | None = None,
             fixed: bool | None = None) -> None:
        """The newest normalised frame and the one before, ``(R, C, 2, V)``, into ``rows``: the
        frame before as the regular window holds it (zeros before a person's first frame); only
        a window's first frame, ``(R, C, 1, V)``, has no frame before (its motion is zero).
        ``first`` (bool ``(R,)``) marks rows whose newest frame is their window's first, in a
        batch of two frames (the frame before is then ignored: zero motion); ``fixed`` as in
        :meth:`ContinualSTGCN.step`."""
        fixed = self.fixed if fixed is None else fixed
        if fixed:
            n = len(rows)
            frames, rows = self.first.pad(frames, rows)
            if first is not None:
                first = torch.cat([first, first.new_zeros(len(rows) - n)])
            if self.graphed and frames.shape[2] == 2:
                first = torch.zeros(len(rows), dtype=torch.bool, device=rows.device) if first is None else first
                if self._replay(frames, rows, first):
                    return
        self._step(frames, rows, first, fixed)

    def _step(self, frames: torch.Tensor, rows: torch.Tensor, first: torch.Tensor | None, fixed: bool) -> None:
        for name, net in zip(self.names, self.nets):
            x = frames if name == "joint" else stream_input(frames[..., None], name, self.parent, self.coords)[..., 0]
            x = x[:, :, -1]
            if first is not None and name.endswith("motion"):
                x = torch.where(first[:, None, None], 0.0, x)
            net.step(x, rows, fixed)

    def capture(self, channels: int, joints: int, rows: int) -> None:
        """Capture the step graphs of every bucket size up to ``rows`` now (else at first use)."""
        p = next(self.model.parameters())
        size = bucket(rows)
        while self.graphed and size >= MIN_BUCKET:  # largest first: the smaller ones reuse its memory pool
            self._replay(torch.zeros(size, channels, 2, joints, dtype=p.dtype, device=p.device),
                         torch.full((size,), self.scratch, dtype=torch.long, device=p.device),
                         torch.zeros(size, dtype=torch.bool, device=p.device))
            size //= 2

    def _replay(self, frames: torch.Tensor, rows: torch.Tensor, first: torch.Tensor) -> bool:
        """A fixed-shape step of two frames from the CUDA graph of its size (captured at first use,
        again after the state grows: a step is some 300 small kernels a network, a replay one launch).
        False, with a warning, where capture fails (the step then runs eagerly from now on)."""
        entry = self._graphs.get(len(rows))
        if entry is None:
            try:
                entry = self._graphs[len(rows)] = self._capture(frames, len(rows))
            except RuntimeError as exc:
                log.warning("CUDA graph capture of the continual step failed, stepping eagerly: %s",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self.graphed = False
                return False
        graph, s_frames, s_rows, s_first = entry
        s_frames.copy_(frames)
        s_rows.copy_(rows)
        s_first.copy_(first)
        graph.replay()
        return True

    def _capture(self, frames: torch.Tensor, size: int
                 ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The graph of a fixed-shape step of ``size`` rows and its static inputs; its warm-up steps
        write to the scratch row only."""
        device = frames.device
        s_frames = frames.new_zeros((size,) + tuple(frames.shape[1:]))
        s_rows = torch.full((size,), self.scratch, dtype=torch.long, device=device)
        s_first = torch.zeros(size, dtype=torch.bool, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(s_frames, s_rows, s_first, True)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._step(s_frames, s_rows, s_first, True)
        return graph, s_frames, s_rows, s_first

    @torch.no_grad()
    def flush(self, rows: torch.Tensor) -> None:
        for net in self.nets:
            net.flush(rows)

    def ready(self, rows: torch.Tensor, outputs: int = 1) -> torch.Tensor:
        return self.first.ready(rows, outputs)

    @torch.no_grad()
    def logits(self, rows: torch.Tensor, empty_slots: int = 0) -> torch.Tensor:
        """As the regular model's eval output: one network's logits, or the fused log-probabilities;
        ``empty_slots`` as in :meth:`ContinualSTGCN.logits`."""
        if len(self.nets) == 1:
            return self.first.logits(rows, empty_slots)
        return fuse(torch.stack([net.logits(rows, empty_slots) for net in self.nets]), self.model.weights)

    @torch.no_grad()
    def next_frame(self, rows: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
        return self.first.next_frame(rows, recent)

    @torch.no_grad()
    def window(self, x: torch.Tensor, recent: torch.Tensor | None = None, empty_slots: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The regular model's eval output (and next frames, given ``recent``) on normalised windows
        of one person slot ``(N, C, T, V, 1)``, as if each had ``empty_slots`` more, empty slots:
        the networks run on the person's slot only, a fraction of the regular model's work."""
        logits, pred, first = [], None, first_frames(x)
        for i, (name, net) in enumerate(zip(self.names, self.nets)):
            xi = x if name == "joint" else stream_input(x, name, self.parent, self.coords)
            out, pred = (net.net(xi, recent, first=first) if i == 0 and recent is not None
                         else (net.net(xi, first=first), pred))
            logits.append(net.with_empty(out, empty_slots))
        return (logits[0] if len(logits) == 1 else fuse(torch.stack(logits), self.model.weights)), pred

    @torch.no_grad()
    def clip(self, x: torch.Tensor, starts: torch.Tensor | None = None, empty_slots: int = 0,
             outputs: int = 1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Normalised windows ``(N, C, T, V, M)`` stepped frame by frame (rows 0..N*M-1, reset
        first; persons averaged as in the regular model), each from its frame ``starts`` (default
        0: all of it). Returns the scores ``(N, K)`` and whether each window has an answer,
        ``live`` (at the last frame, as a live stream is answered) and ``flushed`` (the right
        padding added: with all frames stepped, the regular model's scores on the same windows).
        ``empty_slots``: person slots of the regular model left empty besides the M given;
        ``outputs``: the last block's outputs a live answer needs (:meth:`ContinualSTGCN.ready`)."""
        n, c, t, v, m = x.shape
        rows = torch.arange(n * m, device=x.device)
        self.ensure(n * m)
        self.reset(rows)
        frames = x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)
        first = (torch.zeros(n, dtype=torch.long) if starts is None else starts.cpu()).repeat_interleave(m)
        first = first.to(x.device)
        for i in range(t):
            active = rows[first <= i]
            if len(active):
                self.step(frames[active, :, max(0, i - 1):i + 1], active)
        out = {}
        for key in ("live", "flushed"):
            if key == "flushed":
                self.flush(rows)
            per_stream = torch.stack([net.logits(rows, empty_slots).view(n, m, -1).mean(dim=1) for net in self.nets])
            scores = per_stream[0] if len(self.nets) == 1 else fuse(per_stream, self.model.weights)
            out[key] = (scores, self.ready(rows, outputs if key == "live" else 1).view(n, m).any(dim=1))
        return out
