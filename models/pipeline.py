#!/usr/bin/env python3
"""The model pipeline behind `make models`: fetch, verify, assemble, convert (see models.toml).

  python3 models/pipeline.py --check     exit 0 when every output is in place with its digest
  python3 models/pipeline.py             build what is missing (needs the venv's numpy/onnx
                                         only for the conversion steps)

Idempotent: with every output verified it does nothing and touches no network. Verified
digests are remembered by (size, mtime) in models/build/verified.json so a second run does not
re-hash half a gigabyte. Every download and every output is checked against models.toml; a
mismatch is an error (the bad file is kept aside as *.rejected), never a silent re-download.
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, "cache")
BUILD = os.path.join(HERE, "build")
VERIFIED = os.path.join(BUILD, "verified.json")


class PipelineError(Exception):
    pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Verifier:
    """sha256 with a (size, mtime_ns) cache."""

    def __init__(self):
        try:
            with open(VERIFIED) as f:
                self.seen = json.load(f)
        except (OSError, ValueError):
            self.seen = {}
        self.dirty = False

    def ok(self, path, expected):
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = os.path.abspath(path)
        rec = self.seen.get(key)
        if rec and rec[0] == st.st_size and rec[1] == st.st_mtime_ns:
            return rec[2] == expected
        digest = sha256_file(path)
        self.seen[key] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest == expected

    def digest(self, path):
        self.ok(path, "")
        return self.seen[os.path.abspath(path)][2]

    def save(self):
        if self.dirty:
            os.makedirs(BUILD, exist_ok=True)
            tmp = VERIFIED + ".part"
            with open(tmp, "w") as f:
                json.dump(self.seen, f, indent=0, sort_keys=True)
            os.replace(tmp, VERIFIED)


def load_manifest():
    with open(os.path.join(HERE, "models.toml"), "rb") as f:
        m = tomllib.load(f)
    packages = {p["id"]: p for p in m["package"]}
    files = []
    for model in m["model"]:
        for f in model["file"]:
            files.append(dict(f, model=model["name"]))
    return packages, files


def log(msg):
    print(f"models: {msg}", file=sys.stderr, flush=True)


def fetch(pkg, verifier):
    """The package's archive in the cache, downloaded if missing; digest checked."""
    sub = os.path.join(CACHE, pkg["registry"])
    path = os.path.join(sub, pkg["file"])
    if verifier.ok(path, pkg["sha256"]):
        return path
    if os.path.exists(path):
        raise PipelineError(
            f"{path} has sha256 {verifier.digest(path)}, expected {pkg['sha256']}; "
            "delete it to download it again"
        )
    os.makedirs(sub, exist_ok=True)
    log(f"fetching {pkg['spec']}")
    with tempfile.TemporaryDirectory(dir=sub) as tmp:
        if pkg["registry"] == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--no-deps", "--only-binary=:all:", "--no-cache-dir", pkg["spec"], "-d", tmp]
        elif pkg["registry"] == "npm":
            cmd = ["npm", "pack", pkg["spec"], "--silent", "--pack-destination", tmp]
        else:
            raise PipelineError(f"package {pkg['id']}: unknown registry {pkg['registry']!r}")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise PipelineError(f"{' '.join(cmd[:4])} ... {pkg['spec']} failed:\n{r.stdout}{r.stderr}")
        got = os.path.join(tmp, pkg["file"])
        if not os.path.exists(got):
            raise PipelineError(f"{pkg['spec']}: expected {pkg['file']}, got {os.listdir(tmp)}")
        digest = sha256_file(got)
        if digest != pkg["sha256"]:
            os.replace(got, path + ".rejected")
            raise PipelineError(
                f"{pkg['file']} has sha256 {digest}, expected {pkg['sha256']} (kept as {path}.rejected)"
            )
        os.replace(got, path)
    return path


def member_bytes(archive, member):
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise PipelineError(f"{member} is not a file in {archive}")
        return f.read()


def write_atomic(path, chunks):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


class Pipeline:
    def __init__(self, out_dir):
        self.out = out_dir
        self.packages, self.files = load_manifest()
        self.v = Verifier()
        self.steps_done = set()

    def location(self, f):
        return os.path.join(BUILD if f.get("keep", True) is False else self.out, f["path"])

    def by_path(self, path):
        return next(f for f in self.files if f["path"] == path)

    def valid(self, f):
        return self.v.ok(self.location(f), f["sha256"])

    def missing(self):
        return [f for f in self.files if f.get("keep", True) and not self.valid(f)]

    def member(self, ref):
        pid, path = ref.split(":", 1)
        if pid not in self.packages:
            raise PipelineError(f"unknown package id {pid!r} in {ref!r}")
        return member_bytes(fetch(self.packages[pid], self.v), path)

    def ensure(self, f):
        dest = self.location(f)
        if self.valid(f):
            return dest
        if "member" in f:
            write_atomic(dest, [self.member(f["member"])])
        elif "concat" in f:
            write_atomic(dest, (self.member(ref) for ref in f["concat"]))
        elif "text" in f:
            write_atomic(dest, [f["text"].encode("utf-8")])
        elif "step" in f:
            if f["step"] in self.steps_done:
                raise PipelineError(f"step {f['step']} ran but did not produce {f['path']} correctly")
            self.run_step(f["step"])
            self.steps_done.add(f["step"])
        else:
            raise PipelineError(f"{f['path']}: no member, concat, text or step")
        if not self.v.ok(dest, f["sha256"]):
            got = self.v.digest(dest)
            os.replace(dest, dest + ".rejected")
            raise PipelineError(f"{f['path']} has sha256 {got}, expected {f['sha256']} (kept as {dest}.rejected)")
        return dest

    def run_step(self, step):
        t0 = time.monotonic()
        sys.path.insert(0, HERE)
        if step == "whisper-onnx":
            import convert_whisper

            src = self.ensure(self.by_path("whisper-base/model.bin"))
            enc = os.path.join(self.out, "whisper-base/encoder.onnx")
            dec = os.path.join(self.out, "whisper-base/decoder.onnx")
            os.makedirs(os.path.dirname(enc), exist_ok=True)
            log("converting Whisper base (CTranslate2 -> ONNX)")
            convert_whisper.convert(src, enc + ".part", dec + ".part")
            os.replace(enc + ".part", enc)
            os.replace(dec + ".part", dec)
        elif step == "whisper-int8":
            import convert_whisper

            for name in ("encoder", "decoder"):
                src = self.ensure(self.by_path(f"whisper-base/{name}.onnx"))
                dst = os.path.join(self.out, f"whisper-base/{name}.int8.onnx")
                log(f"quantizing {name} to int8")
                convert_whisper.quantize(src, dst + ".part")
                os.replace(dst + ".part", dst)
        elif step == "zh-lexicon":
            import zh_lexicon

            d = os.path.join(self.out, "zh")
            os.makedirs(d, exist_ok=True)
            log("generating the Mandarin lexicon")
            zh_lexicon.generate(
                fetch(self.packages["pypinyin"], self.v), fetch(self.packages["misaki"], self.v), d
            )
        else:
            raise PipelineError(f"unknown step {step!r}")
        log(f"step {step} took {time.monotonic() - t0:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only verify; exit 1 if anything is missing")
    ap.add_argument("--out", default=os.path.join(HERE, "out"), help="output directory (default models/out)")
    args = ap.parse_args()
    p = Pipeline(os.path.abspath(args.out))
    try:
        todo = p.missing()
        if args.check:
            p.v.save()
            return 0 if not todo else 1
        t0 = time.monotonic()
        for f in todo:
            p.ensure(f)
        p.v.save()
        if todo:
            log(f"{len(todo)} files built and verified in {time.monotonic() - t0:.1f} s")
        return 0
    except PipelineError as e:
        p.v.save()
        print(f"models: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
