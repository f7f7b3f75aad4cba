"""Where Kokoro's time goes: ONNX Runtime's profiler over a few runs of the TTS graph, summed
by operator type. A maintenance tool for docs/benchmarks.md, not part of `make models`.

    models/build/venv/bin/python models/profile_kokoro.py [MODEL] [--threads N] [--runs N]

Input: 40 phoneme ids (fixed seed) with the zf_xiaobei voice, speed 1.0, 2 threads.
"""
import argparse
import collections
import json
import os

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=os.path.join(HERE, "out/kokoro/kokoro-v1.0.int8.onnx"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    voice = np.fromfile(os.path.join(HERE, "out/kokoro/voices/zf_xiaobei.bin"), dtype=np.float32)
    voice = voice.reshape(510, 1, 256)
    ids = [0] + list(np.random.default_rng(1).integers(1, 100, size=40)) + [0]
    feed = {
        "tokens": np.array([ids], dtype=np.int64),
        "style": voice[len(ids) - 2],
        "speed": np.array([1.0], dtype=np.float32),
    }
    o = ort.SessionOptions()
    o.intra_op_num_threads = a.threads
    o.inter_op_num_threads = 1
    o.enable_profiling = True
    s = ort.InferenceSession(a.model, o, providers=["CPUExecutionProvider"])
    for _ in range(a.runs):
        s.run(None, feed)
    path = s.end_profiling()
    by_op = collections.Counter()
    with open(path) as f:
        for e in json.load(f):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"]["op_name"]] += e["dur"]
    os.remove(path)
    total = sum(by_op.values())
    print(f"{a.model}: {total / a.runs / 1000:.0f} ms of kernel time per run")
    for op, us in by_op.most_common(10):
        print(f"{op:24} {us / a.runs / 1000:8.0f} ms {100 * us / total:5.1f} %")


if __name__ == "__main__":
    main()
