//! The model cache: a directory of `ggml-<name>.bin` files.
//!
//! `$TRANSCRIBE_MODEL_DIR` if set, else `<platform cache dir>/transcribe/models`
//! (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS). Files only
//! appear there complete and verified: downloads and imports write a `.partial` file first
//! and rename it.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::catalog::ModelName;
use crate::error::ModelError;
use crate::ggml::GGML_MAGIC;

/// Environment variable that overrides the cache directory.
pub const MODEL_DIR_ENV: &str = "TRANSCRIBE_MODEL_DIR";

/// The cache directory (not created).
///
/// # Errors
/// [`ModelError::NoCacheDir`] when `TRANSCRIBE_MODEL_DIR` is unset and the platform has no
/// cache directory.
pub fn cache_dir() -> Result<PathBuf, ModelError> {
    cache_dir_from(std::env::var_os(MODEL_DIR_ENV), dirs::cache_dir())
}

/// [`cache_dir`] from its inputs: the environment override and the platform cache dir.
fn cache_dir_from(env: Option<OsString>, platform: Option<PathBuf>) -> Result<PathBuf, ModelError> {
    match env {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => platform
            .map(|p| p.join("transcribe").join("models"))
            .ok_or(ModelError::NoCacheDir),
    }
}

/// A model file in the cache.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CachedModel {
    /// The catalog name, when the file name is one of the catalog's.
    pub name: Option<ModelName>,
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Lists the ggml files in [`cache_dir`], catalog models first (in catalog order), then
/// other `*.bin` files by name. A missing directory is an empty cache.
///
/// # Errors
/// [`ModelError::NoCacheDir`], or [`ModelError::Io`] when the directory cannot be read.
pub fn list_cached() -> Result<Vec<CachedModel>, ModelError> {
    list_cached_in(&cache_dir()?)
}

/// [`list_cached`] for a given directory.
///
/// # Errors
/// [`ModelError::Io`] when the directory exists but cannot be read.
pub fn list_cached_in(dir: &Path) -> Result<Vec<CachedModel>, ModelError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ModelError::io("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io("listing", dir, e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if !file_name.ends_with(".bin") || file_name.starts_with('.') {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| ModelError::io("reading", entry.path(), e))?;
        if !meta.is_file() {
            continue;
        }
        let name = ModelName::ALL
            .into_iter()
            .find(|m| m.file_name() == file_name);
        out.push(CachedModel {
            name,
            path: entry.path(),
            bytes: meta.len(),
        });
    }
    out.sort_by(|a, b| {
        (a.name.is_none(), a.name, &a.path).cmp(&(b.name.is_none(), b.name, &b.path))
    });
    Ok(out)
}

/// Whether `path` is a file that starts with the ggml magic (a cheap sanity check; the
/// loader does the rest).
pub fn looks_like_ggml(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && u32::from_le_bytes(magic) == GGML_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_platform_dir() -> Result<(), ModelError> {
        let platform = Some(PathBuf::from("/home/u/.cache"));
        assert_eq!(
            cache_dir_from(Some("/m".into()), platform.clone())?,
            PathBuf::from("/m")
        );
        assert_eq!(
            cache_dir_from(None, platform.clone())?,
            PathBuf::from("/home/u/.cache/transcribe/models")
        );
        assert_eq!(
            cache_dir_from(Some("".into()), platform)?,
            PathBuf::from("/home/u/.cache/transcribe/models")
        );
        assert!(matches!(
            cache_dir_from(None, None),
            Err(ModelError::NoCacheDir)
        ));
        Ok(())
    }

    #[test]
    fn lists_catalog_models_first_and_skips_partials() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        for f in [
            "ggml-base.bin",
            "ggml-tiny.en.bin",
            "custom.bin",
            "ggml-tiny.en.bin.partial",
            ".import-x.partial",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(f), GGML_MAGIC.to_le_bytes())?;
        }
        let list = list_cached_in(dir.path())?;
        let names: Vec<_> = list
            .iter()
            .map(|c| c.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            names,
            [
                Some("ggml-tiny.en.bin".into()),
                Some("ggml-base.bin".into()),
                Some("custom.bin".into())
            ]
        );
        assert_eq!(list[0].name, Some(ModelName::TinyEn));
        assert_eq!(list[2].name, None);
        assert_eq!(list[0].bytes, 4);
        assert!(looks_like_ggml(&list[0].path));
        assert!(!looks_like_ggml(&dir.path().join("missing.bin")));
        assert!(list_cached_in(&dir.path().join("none"))?.is_empty());
        Ok(())
    }
}
