//! ONNX Runtime setup (shell): loading the shared library, execution providers, sessions, and
//! the model files on disk — their location, their digests against `models/models.toml`, and
//! reading them into memory.
//!
//! The library is loaded with `ort::init_from`, so a missing or incompatible library is an
//! error value (exit 78 at start), never a panic. Telemetry is off. The execution provider comes
//! from `speech.execution_provider`: `cpu`, or `cuda:N`, which falls back to the CPU with a
//! warning when the CUDA provider cannot be registered (no GPU, missing CUDA libraries, a
//! CPU-only ONNX Runtime build).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::config::{PACKAGED_MODEL_DIR, PACKAGED_ONNXRUNTIME, SpeechConfig, VerifyModels};

/// The model manifest, embedded so that the binary (not a file next to the models) decides
/// which digests are acceptable.
pub const MODELS_TOML: &str = include_str!("../../models/models.toml");

/// Why the speech engine could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// The ONNX Runtime library is missing or unusable (exit 78).
    #[error("ONNX Runtime library {path}: {message}")]
    Library {
        /// The library path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A model file is missing, unreadable or altered (exit 78).
    #[error("model file {path}: {message}")]
    Model {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// ONNX Runtime refused a session or a run.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The worker queue is full (the request was not queued).
    #[error("speech queue full")]
    Busy,
    /// The workers have stopped.
    #[error("speech workers stopped")]
    Stopped,
    /// The request was cancelled (barge-in).
    #[error("cancelled")]
    Cancelled,
    /// Bad input from our own code (an empty utterance, an unknown voice).
    #[error("{0}")]
    Input(String),
}

impl From<ort::Error> for SpeechError {
    fn from(e: ort::Error) -> Self {
        Self::Runtime(e.to_string())
    }
}

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    /// The CPU provider.
    Cpu,
    /// CUDA on this GPU index.
    Cuda(i32),
}

impl ExecutionProvider {
    /// Parses `cpu` or `cuda:N`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cpu" => Some(Self::Cpu),
            _ => {
                let n = s.strip_prefix("cuda:")?.parse::<i32>().ok()?;
                (0..=63).contains(&n).then_some(Self::Cuda(n))
            }
        }
    }
}

static ORT_INIT: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// The ONNX Runtime library to load: the configured one, else the packaged one if it exists,
/// else the copy `make models` puts in a development tree (found from the current directory or
/// from the executable, which lives in `target/<profile>/`).
pub fn library_path(cfg: &SpeechConfig) -> PathBuf {
    if let Some(p) = &cfg.onnxruntime_library {
        return p.clone();
    }
    let packaged = PathBuf::from(PACKAGED_ONNXRUNTIME);
    if packaged.exists() {
        return packaged;
    }
    let rel = Path::new("target/onnxruntime/libonnxruntime.so.1.31.1");
    dev_tree_candidates(rel)
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or(packaged)
}

/// The model directory: configured, else packaged if present, else `models/out` of a
/// development tree.
pub fn model_dir(cfg: &SpeechConfig) -> PathBuf {
    if let Some(p) = &cfg.model_dir {
        return p.clone();
    }
    let packaged = PathBuf::from(PACKAGED_MODEL_DIR);
    if packaged.exists() {
        return packaged;
    }
    dev_tree_candidates(Path::new("models/out"))
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or(packaged)
}

fn dev_tree_candidates(rel: &Path) -> Vec<PathBuf> {
    let mut v = vec![rel.to_owned()];
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/vaultcall or target/debug/deps/test-… → the tree is above `target`.
        for anc in exe.ancestors() {
            if anc.file_name().is_some_and(|n| n == "target")
                && let Some(root) = anc.parent()
            {
                v.push(root.join(rel));
                break;
            }
        }
    }
    v
}

/// Loads ONNX Runtime once per process (telemetry off). Later calls return the first result;
/// asking for a different library after the first load is an error.
pub fn init_runtime(path: &Path) -> Result<(), SpeechError> {
    let r = ORT_INIT.get_or_init(|| {
        if !path.exists() {
            return Err(format!(
                "not found (run `make models`, or set speech.onnxruntime_library; the package \
                 installs {PACKAGED_ONNXRUNTIME})"
            ));
        }
        let builder = ort::init_from(path).map_err(|e| e.to_string())?;
        let env = builder
            .with_name("vaultcall")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        Ok((path.to_owned(), env))
    });
    match r {
        Ok((loaded, _)) if loaded == path => Ok(()),
        Ok((loaded, _)) => Err(SpeechError::Library {
            path: path.to_owned(),
            message: format!("{} is already loaded in this process", loaded.display()),
        }),
        Err(message) => Err(SpeechError::Library {
            path: path.to_owned(),
            message: message.clone(),
        }),
    }
}

/// Options for one session.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Intra-op threads.
    pub threads: usize,
    /// Where it runs.
    pub provider: ExecutionProvider,
}

/// Which provider a session actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// On the CPU (asked for, or the fallback).
    Cpu,
    /// On CUDA device N.
    Cuda(i32),
}

/// Builds a session from model bytes. A CUDA provider that cannot be registered falls back to
/// the CPU with a warning.
pub fn session(
    name: &str,
    model: &[u8],
    opts: SessionOptions,
) -> Result<(Session, Placed), SpeechError> {
    let env = match ORT_INIT.get() {
        Some(Ok((_, env))) => env,
        _ => {
            return Err(SpeechError::Runtime(
                "ONNX Runtime is not loaded (init_runtime first)".into(),
            ));
        }
    };
    let base = || -> Result<ort::session::builder::SessionBuilder, SpeechError> {
        let rt = |e: ort::Error<ort::session::builder::SessionBuilder>| {
            SpeechError::Runtime(e.to_string())
        };
        let b = Session::builder(env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(rt)?;
        let b = b.with_intra_threads(opts.threads).map_err(rt)?;
        b.with_inter_threads(1).map_err(rt)
    };
    if let ExecutionProvider::Cuda(device) = opts.provider {
        let cuda = ort::ep::CUDA::default()
            .with_device_id(device)
            .build()
            .error_on_failure();
        let attempt = base().and_then(|b| {
            b.with_execution_providers([cuda])
                .map_err(|e| SpeechError::Runtime(e.to_string()))?
                .commit_from_memory(model)
                .map_err(SpeechError::from)
        });
        match attempt {
            Ok(s) => {
                log::info!(session = name, device = device; "speech session on CUDA");
                return Ok((s, Placed::Cuda(device)));
            }
            Err(e) => {
                log::warn!(session = name, device = device, reason:% = e; "CUDA execution provider unavailable; running on the CPU");
            }
        }
    }
    let s = base()?.commit_from_memory(model)?;
    Ok((s, Placed::Cpu))
}

/// One file of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path under the model directory.
    pub path: String,
    /// Expected SHA-256, lower-case hex.
    pub sha256: String,
    /// The model it belongs to.
    pub model: String,
    /// `fp32`/`int8` for precision-specific graphs.
    pub precision: Option<String>,
}

/// The output files listed in the embedded `models/models.toml` (intermediates left out).
pub fn manifest() -> Vec<ManifestFile> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        model: Vec<Model>,
    }
    #[derive(serde::Deserialize)]
    struct Model {
        name: String,
        file: Vec<File>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        path: String,
        sha256: String,
        #[serde(default)]
        precision: Option<String>,
        #[serde(default = "yes")]
        keep: bool,
    }
    fn yes() -> bool {
        true
    }
    let m: Manifest = toml::from_str(MODELS_TOML).expect("models/models.toml is valid (tested)");
    m.model
        .into_iter()
        .flat_map(|model| {
            let name = model.name;
            model
                .file
                .into_iter()
                .filter(|f| f.keep)
                .map(move |f| ManifestFile {
                    path: f.path,
                    sha256: f.sha256,
                    model: name.clone(),
                    precision: f.precision,
                })
        })
        .collect()
}

/// Digests verified earlier, by path: (size, mtime in ns, sha256).
type VerifiedCache = BTreeMap<String, (u64, u128, String)>;

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// Checks model files against the manifest. With [`VerifyModels::Cached`], a file whose size
/// and modification time match the record in `cache_file` from an earlier successful check is
/// not hashed again; the record is updated after hashing.
pub fn verify_models(
    dir: &Path,
    paths: &[&str],
    mode: VerifyModels,
    cache_file: Option<&Path>,
) -> Result<(), SpeechError> {
    let wanted = manifest();
    let mut cache: VerifiedCache = match (mode, cache_file) {
        (VerifyModels::Cached, Some(f)) => std::fs::read(f)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
        _ => VerifiedCache::new(),
    };
    let mut changed = false;
    for rel in paths {
        let entry = wanted
            .iter()
            .find(|f| f.path == *rel)
            .ok_or_else(|| SpeechError::Model {
                path: dir.join(rel),
                message: "not listed in models/models.toml".into(),
            })?;
        let path = dir.join(rel);
        let meta = std::fs::metadata(&path).map_err(|e| SpeechError::Model {
            path: path.clone(),
            message: format!("{e} (run `make models`, or set speech.model_dir)"),
        })?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let key = path.display().to_string();
        if let Some((size, mt, sha)) = cache.get(&key)
            && *size == meta.len()
            && *mt == mtime
            && *sha == entry.sha256
        {
            continue;
        }
        let got = sha256_file(&path).map_err(|e| SpeechError::Model {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if got != entry.sha256 {
            cache.remove(&key);
            if let Some(f) = cache_file {
                let _ = write_cache(f, &cache);
            }
            return Err(SpeechError::Model {
                path,
                message: format!(
                    "sha256 {got} differs from {} in models/models.toml; the file was altered \
                     or is from another build (run `make models`)",
                    entry.sha256
                ),
            });
        }
        cache.insert(key, (meta.len(), mtime, got));
        changed = true;
    }
    if changed
        && mode == VerifyModels::Cached
        && let Some(f) = cache_file
        && let Err(e) = write_cache(f, &cache)
    {
        log::warn!(file:% = f.display(), reason:% = e; "cannot record verified model digests");
    }
    Ok(())
}

fn write_cache(f: &Path, cache: &VerifiedCache) -> std::io::Result<()> {
    let tmp = f.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(cache).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, f)
}

/// Reads a model file whose digest has been verified.
pub fn read(dir: &Path, rel: &str) -> Result<Vec<u8>, SpeechError> {
    let path = dir.join(rel);
    std::fs::read(&path).map_err(|e| SpeechError::Model {
        path,
        message: e.to_string(),
    })
}

/// Reads a UTF-8 model file.
pub fn read_text(dir: &Path, rel: &str) -> Result<String, SpeechError> {
    String::from_utf8(read(dir, rel)?).map_err(|_| SpeechError::Model {
        path: dir.join(rel),
        message: "not UTF-8".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse() {
        assert_eq!(
            ExecutionProvider::parse("cpu"),
            Some(ExecutionProvider::Cpu)
        );
        assert_eq!(
            ExecutionProvider::parse("cuda:1"),
            Some(ExecutionProvider::Cuda(1))
        );
        for bad in ["gpu", "cuda", "cuda:", "cuda:-1", "cuda:x", "CPU"] {
            assert_eq!(ExecutionProvider::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn manifest_lists_every_output_with_a_digest() {
        let m = manifest();
        assert!(m.len() >= 20, "{}", m.len());
        for f in &m {
            assert_eq!(f.sha256.len(), 64, "{}", f.path);
            assert!(
                f.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}",
                f.path
            );
        }
        assert!(m.iter().all(|f| f.path != "whisper-base/model.bin"));
        assert!(m.iter().any(|f| f.path == "whisper-base/encoder.int8.onnx"));
    }

    #[test]
    fn a_tampered_file_is_refused_and_a_good_one_cached() {
        let dir = tempfile::tempdir().unwrap();
        let rel = "clips/basic_ref_zh.txt";
        std::fs::create_dir_all(dir.path().join("clips")).unwrap();
        std::fs::write(dir.path().join(rel), "对，这就是我，万人敬仰的太乙真人。\n").unwrap();
        let cache = dir.path().join("verified.json");
        verify_models(dir.path(), &[rel], VerifyModels::Cached, Some(&cache)).unwrap();
        assert!(cache.exists());
        // Same size, different content, new mtime: refused.
        std::fs::write(dir.path().join(rel), "对，这就是你，万人敬仰的太乙真人。\n").unwrap();
        let filetime = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(rel))
            .unwrap()
            .set_modified(filetime)
            .unwrap();
        let e = verify_models(dir.path(), &[rel], VerifyModels::Cached, Some(&cache)).unwrap_err();
        assert!(e.to_string().contains("differs"), "{e}");
        let e = verify_models(dir.path(), &["nope.onnx"], VerifyModels::Full, None).unwrap_err();
        assert!(e.to_string().contains("not listed"), "{e}");
    }
}
