"""Converts Whisper base from CTranslate2's model.bin to two ONNX graphs, without torch.

encoder.onnx  mel [B, 80, T] (T even, at most 3000: a variable number of frames, so a short
              utterance is not padded to 30 s)
              -> cross_k, cross_v [L, B, H, T/2, Dh]: every decoder layer's cross-attention keys
              and values, computed once per utterance.
decoder.onnx  tokens int64 [B, N], offset int64 [1] (position of tokens[:, 0]),
              self_k, self_v [L, B, H, P, Dh] (the cache of the P earlier positions),
              cross_k, cross_v
              -> logits [B, V] (for the last of the N tokens), new_self_k, new_self_v
              [L, B, H, P + N, Dh].

Standard Whisper architecture: pre-norm blocks, GELU, conv1 + GELU, conv2 (stride 2) + GELU,
sinusoidal encoder positions, learned decoder positions, output projection tied to the token
embeddings. CTranslate2 stores linear weights as [out, in] and fuses Q, K, V (self-attention)
and K, V (cross-attention); the graphs below split them again.
"""
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
EPS = 1e-5


class Graph:
    """A small builder: unique names, initializers, nodes."""

    def __init__(self, weights):
        self.w = weights
        self.nodes = []
        self.inits = []
        self.names = set()
        self.n = 0

    def tmp(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, name, array):
        if name not in self.names:
            self.names.add(name)
            a = np.asarray(array)
            self.inits.append(numpy_helper.from_array(a.copy(order="C"), name))
        return name

    def f32(self, var):
        """A CTranslate2 variable as an fp32 initializer."""
        return self.const(var, self.w[var].astype(np.float32))

    def linear_t(self, var, rows=None):
        """Weight [out, in] (optionally a row slice) transposed to [in, out] for MatMul."""
        w = self.w[var].astype(np.float32)
        name = var
        if rows is not None:
            w = w[rows[0]:rows[1]]
            name = f"{var}[{rows[0]}:{rows[1]}]"
        return self.const(name + "^T", w.T.copy())

    def bias(self, var, rows=None):
        b = self.w[var].astype(np.float32)
        name = var
        if rows is not None:
            b = b[rows[0]:rows[1]]
            name = f"{var}[{rows[0]}:{rows[1]}]"
        return self.const(name, b)

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self.tmp(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def op_to(self, op_type, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def i64(self, name, values):
        return self.const(name, np.array(values, dtype=np.int64))

    def scalar(self, name, value):
        return self.const(name, np.array(value, dtype=np.float32))

    # Building blocks.

    def layer_norm(self, x, prefix):
        return self.op(
            "LayerNormalization",
            [x, self.f32(prefix + "/gamma"), self.f32(prefix + "/beta")],
            axis=-1,
            epsilon=EPS,
        )

    def dense(self, x, prefix, rows=None, with_bias=True):
        y = self.op("MatMul", [x, self.linear_t(prefix + "/weight", rows)])
        if with_bias:
            y = self.op("Add", [y, self.bias(prefix + "/bias", rows)])
        return y

    def gelu(self, x):
        # Exact GELU: 0.5 x (1 + erf(x / sqrt 2)); ONNX Runtime fuses the pattern.
        e = self.op("Erf", [self.op("Div", [x, self.scalar("sqrt2", np.sqrt(2.0))])])
        return self.op(
            "Mul", [self.op("Mul", [x, self.scalar("half", 0.5)]), self.op("Add", [e, self.scalar("one", 1.0)])]
        )

    def heads(self, x, h, dh):
        """[B, T, H*Dh] -> [B, H, T, Dh]."""
        r = self.op("Reshape", [x, self.i64(f"shape_heads_{h}_{dh}", [0, 0, h, dh])])
        return self.op("Transpose", [r], perm=[0, 2, 1, 3])

    def merge(self, x, d):
        """[B, H, T, Dh] -> [B, T, H*Dh]."""
        t = self.op("Transpose", [x], perm=[0, 2, 1, 3])
        return self.op("Reshape", [t, self.i64(f"shape_merge_{d}", [0, 0, d])])

    def attend(self, q, k, v, dh, mask=None):
        """softmax(q k^T / sqrt(dh) + mask) v on [B, H, T, Dh] tensors."""
        kt = self.op("Transpose", [k], perm=[0, 1, 3, 2])
        s = self.op("MatMul", [q, kt])
        s = self.op("Mul", [s, self.scalar(f"scale_{dh}", 1.0 / np.sqrt(dh))])
        if mask is not None:
            s = self.op("Add", [s, mask])
        p = self.op("Softmax", [s], axis=-1)
        return self.op("MatMul", [p, v])

    def model(self, inputs, outputs, name):
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(
            g,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="vaultcall-convert-whisper",
            producer_version="1",
        )
        m.ir_version = 8
        return m


def dims(w):
    d = w["encoder/conv1/weight"].shape[0]
    h = int(w["encoder/num_heads"])
    layers_enc = len({k.split("/")[1] for k in w if re.match(r"encoder/layer_\d+/", k)})
    layers_dec = len({k.split("/")[1] for k in w if re.match(r"decoder/layer_\d+/", k)})
    vocab = w["decoder/embeddings/weight"].shape[0]
    return d, h, d // h, layers_enc, layers_dec, vocab


def build_encoder(w):
    d, h, dh, le, ld, _ = dims(w)
    g = Graph(w)
    mel = "mel"
    x = g.op("Conv", [mel, g.f32("encoder/conv1/weight"), g.f32("encoder/conv1/bias")], pads=[1, 1], kernel_shape=[3])
    x = g.gelu(x)
    x = g.op(
        "Conv",
        [x, g.f32("encoder/conv2/weight"), g.f32("encoder/conv2/bias")],
        pads=[1, 1],
        strides=[2],
        kernel_shape=[3],
    )
    x = g.gelu(x)
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [B, T', D]
    # Positions 0..T'-1 of the sinusoidal table.
    shape = g.op("Shape", [x])
    t = g.op("Gather", [shape, g.i64("one_i", 1)], axis=0)
    t = g.op("Unsqueeze", [t, g.i64("axes0", [0])])
    pos = g.op("Slice", [g.f32("encoder/position_encodings/encodings"), g.i64("zero_1", [0]), t, g.i64("axes0", [0])])
    x = g.op("Add", [x, pos])
    for i in range(le):
        p = f"encoder/layer_{i}"
        y = g.layer_norm(x, p + "/self_attention/layer_norm")
        q = g.heads(g.dense(y, p + "/self_attention/linear_0", (0, d)), h, dh)
        k = g.heads(g.dense(y, p + "/self_attention/linear_0", (d, 2 * d)), h, dh)
        v = g.heads(g.dense(y, p + "/self_attention/linear_0", (2 * d, 3 * d)), h, dh)
        a = g.merge(g.attend(q, k, v, dh), d)
        x = g.op("Add", [x, g.dense(a, p + "/self_attention/linear_1")])
        y = g.layer_norm(x, p + "/ffn/layer_norm")
        y = g.dense(g.gelu(g.dense(y, p + "/ffn/linear_0")), p + "/ffn/linear_1")
        x = g.op("Add", [x, y])
    x = g.layer_norm(x, "encoder/layer_norm")
    ks, vs = [], []
    for i in range(ld):
        p = f"decoder/layer_{i}/attention/linear_1"
        ks.append(g.op("Unsqueeze", [g.heads(g.dense(x, p, (0, d)), h, dh), g.i64("axes0", [0])]))
        vs.append(g.op("Unsqueeze", [g.heads(g.dense(x, p, (d, 2 * d)), h, dh), g.i64("axes0", [0])]))
    g.op_to("Concat", ks, "cross_k", axis=0)
    g.op_to("Concat", vs, "cross_v", axis=0)
    kv_shape = [ld, "batch", h, "enc_frames", dh]
    return g.model(
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", 80, "frames"])],
        [
            helper.make_tensor_value_info("cross_k", TensorProto.FLOAT, kv_shape),
            helper.make_tensor_value_info("cross_v", TensorProto.FLOAT, kv_shape),
        ],
        "whisper_encoder",
    )


def build_decoder(w):
    d, h, dh, _, ld, vocab = dims(w)
    g = Graph(w)
    # Token embeddings, stored once as [D, V]: Gather on axis 1 for the input tokens, MatMul
    # for the tied output projection (so int8 quantization covers the projection).
    emb_t = g.const("decoder/embeddings/weight^T", w["decoder/embeddings/weight"].astype(np.float32).T.copy())
    e = g.op("Gather", [emb_t, "tokens"], axis=1)  # [D, B, N]
    x = g.op("Transpose", [e], perm=[1, 2, 0])  # [B, N, D]
    shape = g.op("Shape", ["tokens"])
    n = g.op("Gather", [shape, g.i64("one_i", 1)], axis=0)
    n1 = g.op("Unsqueeze", [n, g.i64("axes0", [0])])
    end = g.op("Add", ["offset", n1])
    pos = g.op("Slice", [g.f32("decoder/position_encodings/encodings"), "offset", end, g.i64("axes0", [0])])
    x = g.op("Add", [x, pos])
    # Causal mask [N, P + N]: new token i (absolute position offset + i) sees positions <= it.
    total = end
    zero = g.i64("zero_s", 0)
    one = g.i64("one_s", 1)
    rows = g.op("Range", [zero, g.op("Squeeze", [n1, g.i64("axes0", [0])]), one])
    rows = g.op("Add", [rows, g.op("Squeeze", ["offset", g.i64("axes0", [0])])])
    cols = g.op("Range", [zero, g.op("Squeeze", [total, g.i64("axes0", [0])]), one])
    future = g.op("Greater", [g.op("Unsqueeze", [cols, g.i64("axes0", [0])]), g.op("Unsqueeze", [rows, g.i64("axes1", [1])])])
    mask = g.op("Where", [future, g.scalar("neg_big", -1e9), g.scalar("zero_f", 0.0)])
    new_k, new_v = [], []
    for i in range(ld):
        p = f"decoder/layer_{i}"
        idx = g.i64(f"layer_{i}", i)
        y = g.layer_norm(x, p + "/self_attention/layer_norm")
        q = g.heads(g.dense(y, p + "/self_attention/linear_0", (0, d)), h, dh)
        k = g.heads(g.dense(y, p + "/self_attention/linear_0", (d, 2 * d)), h, dh)
        v = g.heads(g.dense(y, p + "/self_attention/linear_0", (2 * d, 3 * d)), h, dh)
        k = g.op("Concat", [g.op("Gather", ["self_k", idx], axis=0), k], axis=2)
        v = g.op("Concat", [g.op("Gather", ["self_v", idx], axis=0), v], axis=2)
        new_k.append(g.op("Unsqueeze", [k, g.i64("axes0", [0])]))
        new_v.append(g.op("Unsqueeze", [v, g.i64("axes0", [0])]))
        a = g.merge(g.attend(q, k, v, dh, mask), d)
        x = g.op("Add", [x, g.dense(a, p + "/self_attention/linear_1")])
        y = g.layer_norm(x, p + "/attention/layer_norm")
        q = g.heads(g.dense(y, p + "/attention/linear_0"), h, dh)
        ck = g.op("Gather", ["cross_k", idx], axis=0)
        cv = g.op("Gather", ["cross_v", idx], axis=0)
        a = g.merge(g.attend(q, ck, cv, dh), d)
        x = g.op("Add", [x, g.dense(a, p + "/attention/linear_2")])
        y = g.layer_norm(x, p + "/ffn/layer_norm")
        y = g.dense(g.gelu(g.dense(y, p + "/ffn/linear_0")), p + "/ffn/linear_1")
        x = g.op("Add", [x, y])
    x = g.layer_norm(x, "decoder/layer_norm")
    last = g.op("Gather", [x, g.i64("minus_one", -1)], axis=1)  # [B, D]
    g.op_to("MatMul", [last, emb_t], "logits")
    g.op_to("Concat", new_k, "new_self_k", axis=0)
    g.op_to("Concat", new_v, "new_self_v", axis=0)
    cache = [ld, "batch", h, "past", dh]
    new_cache = [ld, "batch", h, "total", dh]
    cross = [ld, "batch", h, "enc_frames", dh]
    return g.model(
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "new"]),
            helper.make_tensor_value_info("offset", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("self_k", TensorProto.FLOAT, cache),
            helper.make_tensor_value_info("self_v", TensorProto.FLOAT, cache),
            helper.make_tensor_value_info("cross_k", TensorProto.FLOAT, cross),
            helper.make_tensor_value_info("cross_v", TensorProto.FLOAT, cross),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", vocab]),
            helper.make_tensor_value_info("new_self_k", TensorProto.FLOAT, new_cache),
            helper.make_tensor_value_info("new_self_v", TensorProto.FLOAT, new_cache),
        ],
        "whisper_decoder",
    )


def convert(model_bin, out_encoder, out_decoder):
    import ct2

    spec, revision, w = ct2.load(model_bin)
    if spec != "WhisperSpec":
        raise ValueError(f"{model_bin}: spec {spec}, expected WhisperSpec")
    for build, out in ((build_encoder, out_encoder), (build_decoder, out_decoder)):
        m = build(w)
        onnx.checker.check_model(m)
        onnx.save(m, out)


def quantize(src, dst):
    """int8 dynamic quantization of MatMul weights (activations stay float)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice is noise here
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
