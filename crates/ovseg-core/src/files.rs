//! Reading the files a manifest names: each is contained in the model directory and read with a
//! size cap checked from its metadata first (a manifest is untrusted input; docs/model-format.md).

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::error::{bail, Error, ErrorCode, Result};

/// `manifest.json`.
pub const MANIFEST_MAX_BYTES: u64 = 1 << 20;
/// A vocabulary file, and its text after gzip decompression (OpenAI's is 1.3 MB, 2.5 MB unpacked).
pub const VOCAB_MAX_BYTES: u64 = 64 << 20;
/// An ONNX graph (ViT-bigG's image tower in float32 is about 7 GB).
pub const GRAPH_MAX_BYTES: u64 = 8 << 30;
/// A `.npy` header (numpy writes under 200 bytes).
pub const NPY_HEADER_MAX_BYTES: u64 = 64 << 10;

/// `dir/name` after resolving symlinks, refused (`MANIFEST_INVALID`) when it is absolute, climbs
/// with `..`, or resolves outside `dir`; `MODEL_NOT_FOUND` when it does not exist.
pub fn resolve(dir: &Path, name: &str, field: &str) -> Result<PathBuf> {
    let relative = Path::new(name);
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || !plain {
        bail!(
            ManifestInvalid,
            "{field} {name:?} must be a relative path inside the model directory (no '..', not absolute)"
        );
    }
    let not_found = |path: &Path, e: std::io::Error| {
        Error::caused_by(
            ErrorCode::ModelNotFound,
            format!("cannot read {field} {}: {e}", path.display()),
            e,
        )
    };
    let root = dir.canonicalize().map_err(|e| not_found(dir, e))?;
    let joined = root.join(relative);
    let path = joined.canonicalize().map_err(|e| not_found(&joined, e))?;
    if !path.starts_with(&root) {
        bail!(
            ManifestInvalid,
            "{field} {name:?} resolves (through a symlink) outside the model directory"
        );
    }
    Ok(path)
}

/// The size of a regular file (else `MODEL_NOT_FOUND`, as unreadable), refused with `code` when
/// over `cap` (before anything is read).
pub fn checked_size(path: &Path, cap: u64, what: &str, code: ErrorCode) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::caused_by(
            ErrorCode::ModelNotFound,
            format!("cannot read {what} {}: {e}", path.display()),
            e,
        )
    })?;
    if !meta.is_file() {
        bail!(
            ModelNotFound,
            "{what} {} is not a regular file",
            path.display()
        );
    }
    if meta.len() > cap {
        return Err(Error::new(
            code,
            format!(
                "{what} {} is {} bytes, over the limit of {cap} bytes",
                path.display(),
                meta.len()
            ),
        ));
    }
    Ok(meta.len())
}

/// Reads a whole file of at most `cap` bytes (also if it grows while being read).
pub fn read_capped(path: &Path, cap: u64, what: &str, code: ErrorCode) -> Result<Vec<u8>> {
    let len = checked_size(path, cap, what, code)?;
    let unreadable = |e: std::io::Error| {
        Error::new(
            ErrorCode::ModelNotFound,
            format!("cannot read {what} {}: {e}", path.display()),
        )
    };
    let mut bytes = Vec::with_capacity(len as usize);
    File::open(path)
        .map_err(unreadable)?
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > cap {
        return Err(Error::new(
            code,
            format!(
                "{what} {} grew past the limit of {cap} bytes while being read",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ovseg-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_stay_inside_the_model_directory() {
        let root = temp_dir("contain");
        let model = root.join("model");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        std::fs::write(model.join("sub/a.bin"), b"x").unwrap();
        std::fs::write(root.join("secret"), b"x").unwrap();
        assert!(resolve(&model, "sub/a.bin", "f")
            .unwrap()
            .ends_with("sub/a.bin"));
        assert!(resolve(&model, "./sub/a.bin", "f").is_ok());
        let code = |name: &str| resolve(&model, name, "f").unwrap_err().code;
        assert_eq!(code("../secret"), ErrorCode::ManifestInvalid);
        assert_eq!(code("sub/../../secret"), ErrorCode::ManifestInvalid);
        assert_eq!(
            code(root.join("secret").to_str().unwrap()),
            ErrorCode::ManifestInvalid
        );
        assert_eq!(code(""), ErrorCode::ManifestInvalid);
        assert_eq!(code("missing.bin"), ErrorCode::ModelNotFound);
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("secret"), model.join("link")).unwrap();
            assert_eq!(code("link"), ErrorCode::ManifestInvalid);
            std::os::unix::fs::symlink("sub/a.bin", model.join("inner")).unwrap();
            assert!(resolve(&model, "inner", "f").is_ok());
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sizes_are_capped_before_reading() {
        let dir = temp_dir("cap");
        let path = dir.join("f");
        std::fs::write(&path, [0u8; 100]).unwrap();
        assert_eq!(
            read_capped(&path, 100, "f", ErrorCode::VocabInvalid)
                .unwrap()
                .len(),
            100
        );
        let err = read_capped(&path, 99, "f", ErrorCode::VocabInvalid).unwrap_err();
        assert_eq!(err.code, ErrorCode::VocabInvalid);
        let err = checked_size(&dir, 1 << 20, "f", ErrorCode::GraphMismatch).unwrap_err();
        assert_eq!(err.code, ErrorCode::ModelNotFound);
        #[cfg(unix)]
        {
            let err = read_capped(
                Path::new("/dev/zero"),
                1 << 20,
                "f",
                ErrorCode::VocabInvalid,
            )
            .unwrap_err();
            assert!(
                err.message.contains("not a regular file"),
                "{}",
                err.message
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
