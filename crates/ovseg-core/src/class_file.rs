//! Class matrices saved to a file and loaded back, so that a service starts with its vocabularies
//! already encoded (no text-encoder run for them).
//!
//! File: `OVSEGCE1`, a little-endian u32 header length, a JSON header (the model it was made with,
//! the classes, templates and overflow policy, the dimension), then `[classes, dim]` float32
//! little-endian unit rows. A file is only accepted by a model with the same [`Identity`]: the
//! precision, tokenizer and geometry, and the features of a probe text, which differ for another
//! text encoder (retrained weights of the same shape and name included).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::class_embeddings::ClassKey;
use crate::error::{Error, ErrorCode, Result};

const MAGIC: &[u8; 8] = b"OVSEGCE1";

/// The names a saved class matrix was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    pub classes: Vec<String>,
    pub templates: Vec<String>,
}

/// The text a model encodes to recognise its own files.
pub const PROBE_TEXT: &str = "a photo of a thing.";
/// Largest difference of the probe's unit features accepted: the same model on another machine
/// or provider (TF32 on a GPU moves them by about 1e-4), never another model.
const PROBE_TOLERANCE: f32 = 1e-3;

/// What a class matrix depends on besides its names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// The text encoder's precision (`float32`, `int8`, `float16`).
    pub precision: String,
    /// The tokenizer's vocabulary file and merges.
    pub tokenizer: (String, Option<usize>),
    pub context_length: usize,
    pub embed_dim: usize,
    /// Unit features of `PROBE_TEXT`.
    pub probe: Vec<f32>,
}

impl Identity {
    fn matches(&self, other: &Identity) -> bool {
        self.precision == other.precision
            && self.tokenizer == other.tokenizer
            && self.context_length == other.context_length
            && self.embed_dim == other.embed_dim
            && self.probe.len() == other.probe.len()
            && self
                .probe
                .iter()
                .zip(&other.probe)
                .all(|(a, b)| (a - b).abs() <= PROBE_TOLERANCE)
    }
}

/// The largest file accepted: 65535 classes of 4096 floats, and a header of at most 16 MiB.
const MAX_HEADER_BYTES: usize = 16 << 20;
const MAX_ROWS: usize = u16::MAX as usize;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    pub format: String,
    /// The model it was made with.
    pub model: Identity,
    pub classes: Vec<String>,
    pub templates: Vec<String>,
    pub overflow: String,
    pub dim: usize,
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::ClassEmbeddingsInvalid,
        format!("class embeddings {}: {message}", path.display()),
    )
}

/// Writes `matrix` (`[key.0.len(), dim]`) for `key` to `path` (through a temporary file beside
/// it, so that a reader never sees half a file).
pub fn save(
    path: &Path,
    identity: &Identity,
    key: &ClassKey,
    dim: usize,
    matrix: &[f32],
) -> Result<()> {
    let header = Header {
        format: "ovseg-class-embeddings".into(),
        model: identity.clone(),
        classes: key.0.clone(),
        templates: key.1.clone(),
        overflow: if key.2 { "truncate" } else { "error" }.into(),
        dim,
    };
    let json = serde_json::to_vec(&header).expect("a header serializes");
    let mut bytes = Vec::with_capacity(12 + json.len() + matrix.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    matrix
        .iter()
        .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    let io = |e: std::io::Error| {
        Error::caused_by(
            ErrorCode::InvalidArgument,
            format!("cannot write class embeddings {}: {e}", path.display()),
            e,
        )
    };
    let name = path
        .file_name()
        .ok_or_else(|| invalid(path, "not a file path"))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&temporary)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(io)
}

/// The key and matrix saved in `path`, refused unless made by a model of this `identity`.
pub fn load(path: &Path, identity: &Identity) -> Result<(ClassKey, Vec<f32>)> {
    let dim = identity.embed_dim;
    let cap = (12 + MAX_HEADER_BYTES + MAX_ROWS * dim * 4) as u64;
    let bytes = crate::files::read_capped(
        path,
        cap,
        "class embeddings",
        ErrorCode::ClassEmbeddingsInvalid,
    )
    .map_err(|e| Error::new(ErrorCode::ClassEmbeddingsInvalid, e.message))?;
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(invalid(path, "not an ovseg class-embeddings file"));
    }
    let length = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if length > MAX_HEADER_BYTES || 12 + length > bytes.len() {
        return Err(invalid(path, "its header is cut short or too long"));
    }
    let header: Header = serde_json::from_slice(&bytes[12..12 + length])
        .map_err(|e| invalid(path, format!("its header is not valid: {e}")))?;
    if header.format != "ovseg-class-embeddings" {
        return Err(invalid(path, "not an ovseg class-embeddings file"));
    }
    if !header.model.matches(identity) || header.dim != dim {
        return Err(invalid(
            path,
            "made by another model (its tokenizer, geometry or text encoder differs from this one's)",
        ));
    }
    let rows = header.classes.len();
    let data = &bytes[12 + length..];
    if rows == 0 || rows > MAX_ROWS || data.len() != rows * dim * 4 {
        return Err(invalid(
            path,
            format!(
                "{rows} classes of {dim} floats need {} bytes of data, it has {}",
                rows * dim * 4,
                data.len()
            ),
        ));
    }
    let truncate = match header.overflow.as_str() {
        "error" => false,
        "truncate" => true,
        other => return Err(invalid(path, format!("unknown overflow policy {other:?}"))),
    };
    if header.templates.is_empty() || header.templates.iter().any(|t| !t.contains("{}")) {
        return Err(invalid(
            path,
            "its templates are empty or lack a {} placeholder",
        ));
    }
    let matrix: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // Unit rows, as the cache holds them: anything else is a damaged file.
    for (i, row) in matrix.chunks_exact(dim).enumerate() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        // Written so that a NaN norm fails too.
        if !(norm - 1.0).abs().le(&1e-3) {
            return Err(invalid(
                path,
                format!("row {i} has norm {norm}, not a unit vector"),
            ));
        }
    }
    Ok(((header.classes, header.templates, truncate), matrix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClassKey {
        (
            vec!["sky".into(), "grass".into()],
            vec!["a photo of a {}.".into()],
            false,
        )
    }

    #[test]
    fn saves_and_loads_back_exactly_for_the_same_model_only() {
        let dir = std::env::temp_dir().join(format!("ovseg-class-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.bin");
        let me = Identity {
            precision: "float32".into(),
            tokenizer: ("v.txt.gz".into(), Some(10)),
            context_length: 77,
            embed_dim: 2,
            probe: vec![0.6, 0.8],
        };
        let matrix = [0.6f32, 0.8, 1.0, 0.0];
        save(&path, &me, &key(), 2, &matrix).unwrap();
        let (k, m) = load(&path, &me).unwrap();
        assert_eq!((k, m.as_slice()), (key(), &matrix[..]));
        // The same model elsewhere (its probe within the tolerance) reads it; another does not.
        let nearby = Identity {
            probe: vec![0.6005, 0.7996],
            ..me.clone()
        };
        assert!(load(&path, &nearby).is_ok());
        let other = Identity {
            probe: vec![0.8, 0.6],
            ..me.clone()
        };
        let code = |r: Result<(ClassKey, Vec<f32>)>| r.unwrap_err().code;
        assert_eq!(code(load(&path, &other)), ErrorCode::ClassEmbeddingsInvalid);
        // Damaged: a cut file, a row off the unit sphere, another file, no file.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert_eq!(code(load(&path, &me)), ErrorCode::ClassEmbeddingsInvalid);
        let mut off = bytes.clone();
        let at = off.len() - 4;
        off[at..].copy_from_slice(&2f32.to_le_bytes());
        std::fs::write(&path, &off).unwrap();
        assert_eq!(code(load(&path, &me)), ErrorCode::ClassEmbeddingsInvalid);
        std::fs::write(&path, b"{\"format\": 1}").unwrap();
        assert_eq!(code(load(&path, &me)), ErrorCode::ClassEmbeddingsInvalid);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(code(load(&path, &me)), ErrorCode::ClassEmbeddingsInvalid);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
