//! One error type for the whole core: a stable code plus a human message.
//!
//! The code's string form (`ErrorCode::as_str`) is what JavaScript sees as `err.code`;
//! it is part of the public API and never changes meaning.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The model directory or a file it names does not exist or cannot be read.
    ModelNotFound,
    /// `manifest.json` is not valid JSON, misses a field or has a bad value.
    ManifestInvalid,
    /// `manifest.json` declares a format version this build does not know.
    ManifestVersion,
    /// An ONNX graph's inputs or outputs do not match what the manifest promises.
    GraphMismatch,
    /// The mask-prompt file has the wrong dtype or shape.
    PromptsInvalid,
    /// The no-object embedding file has the wrong dtype or shape.
    NoObjectInvalid,
    /// The tokenizer vocabulary file is unreadable or malformed.
    VocabInvalid,
    /// The ONNX Runtime shared library is missing or cannot be loaded.
    RuntimeNotFound,
    /// The ONNX Runtime shared library is older than this build needs.
    RuntimeVersion,
    /// The requested execution provider cannot be used on this machine.
    ProviderUnavailable,
    /// An argument has the wrong type or value.
    InvalidArgument,
    /// A list that must not be empty is empty.
    EmptyInput,
    /// A text tokenizes to more tokens than the context holds and the policy is `error`.
    TextTooLong,
    /// An image batch has the wrong size, layout or dtype.
    InvalidImage,
    /// A mask batch has the wrong shape or dtype.
    InvalidMask,
    /// The model was disposed.
    Disposed,
    /// ONNX Runtime failed while running a graph, or a graph produced non-finite values.
    InferenceFailed,
    /// A bug in ovseg: a panic caught at the N-API boundary.
    Internal,
    /// The call was cancelled while it ran (its AbortSignal fired).
    Aborted,
    /// A class-embeddings file is unreadable, damaged, or was saved by another model.
    ClassEmbeddingsInvalid,
}

impl ErrorCode {
    /// What JavaScript sees as `err.code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ModelNotFound => "MODEL_NOT_FOUND",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestVersion => "MANIFEST_VERSION",
            Self::GraphMismatch => "GRAPH_MISMATCH",
            Self::PromptsInvalid => "PROMPTS_INVALID",
            Self::NoObjectInvalid => "NO_OBJECT_INVALID",
            Self::VocabInvalid => "VOCAB_INVALID",
            Self::RuntimeNotFound => "RUNTIME_NOT_FOUND",
            Self::RuntimeVersion => "RUNTIME_VERSION",
            Self::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::EmptyInput => "EMPTY_INPUT",
            Self::TextTooLong => "TEXT_TOO_LONG",
            Self::InvalidImage => "INVALID_IMAGE",
            Self::InvalidMask => "INVALID_MASK",
            Self::Disposed => "DISPOSED",
            Self::InferenceFailed => "INFERENCE_FAILED",
            Self::Internal => "INTERNAL",
            Self::Aborted => "ABORTED",
            Self::ClassEmbeddingsInvalid => "CLASS_EMBEDDINGS_INVALID",
        }
    }
}

impl crate::Named for ErrorCode {
    const ALL: &'static [Self] = &[
        Self::ModelNotFound,
        Self::ManifestInvalid,
        Self::ManifestVersion,
        Self::GraphMismatch,
        Self::PromptsInvalid,
        Self::NoObjectInvalid,
        Self::VocabInvalid,
        Self::RuntimeNotFound,
        Self::RuntimeVersion,
        Self::ProviderUnavailable,
        Self::InvalidArgument,
        Self::EmptyInput,
        Self::TextTooLong,
        Self::InvalidImage,
        Self::InvalidMask,
        Self::Disposed,
        Self::InferenceFailed,
        Self::Internal,
        Self::Aborted,
        Self::ClassEmbeddingsInvalid,
    ];

    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// The lower-level error this one reports (ONNX Runtime's, an I/O error), as `source()`.
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    #[cold]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            cause: None,
        }
    }

    /// `code` and `message` reporting `cause`, which stays reachable through `source()`.
    #[cold]
    pub fn caused_by(
        code: ErrorCode,
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            cause: Some(Arc::new(cause)),
            ..Self::new(code, message)
        }
    }

    /// The same error with `path: ` before its message.
    pub fn in_file(mut self, path: &Path) -> Self {
        self.message = format!("{}: {}", path.display(), self.message);
        self
    }
}

/// Equal when code and message are (the cause is detail for people, not identity).
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message
    }
}

impl Eq for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// An ONNX Runtime failure while running or building a session.
impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Self::caused_by(ErrorCode::InferenceFailed, e.to_string(), e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Runs `f`, turning a panic (a bug) into an `INTERNAL` error: the binding calls every core entry
/// point through this, because a panic unwinding into Node is undefined behaviour.
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Err(Error::new(
            ErrorCode::Internal,
            format!("internal error (a bug in ovseg, please report it): {what}"),
        ))
    })
}

/// Shorthand for an early return with a coded error.
macro_rules! bail {
    ($code:ident, $($fmt:tt)+) => {
        return Err($crate::error::Error::new($crate::error::ErrorCode::$code, format!($($fmt)+)))
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal_errors() {
        assert_eq!(catch_panic(|| Ok(3)), Ok(3));
        let e = catch_panic::<()>(|| panic!("chunk_size must not be zero")).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(
            e.message.contains("chunk_size must not be zero"),
            "{}",
            e.message
        );
        let n = 7;
        let e = catch_panic::<()>(|| panic!("formatted {n}")).unwrap_err();
        assert!(e.message.contains("formatted 7"), "{}", e.message);
        let e = catch_panic::<()>(|| Err(Error::new(ErrorCode::InvalidMask, "m"))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMask);
    }

    #[test]
    fn causes_are_kept_as_sources() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Error::caused_by(ErrorCode::ModelNotFound, "cannot read x", io)
            .in_file(Path::new("/m/x"));
        assert_eq!(e.message, "/m/x: cannot read x");
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("gone"));
        assert_eq!(
            e,
            Error::new(ErrorCode::ModelNotFound, "/m/x: cannot read x")
        );
        assert!(Error::new(ErrorCode::Internal, "x").source().is_none());
    }

    #[test]
    fn every_code_is_listed_once_and_in_the_readme_table() {
        use crate::Named;
        use ErrorCode::*;
        // A new variant fails to compile here until it is handled, and then fails the length
        // check until it is added to `ErrorCode::ALL`.
        let variants = ErrorCode::ALL
            .iter()
            .map(|code| match code {
                ModelNotFound
                | ManifestInvalid
                | ManifestVersion
                | GraphMismatch
                | PromptsInvalid
                | NoObjectInvalid
                | VocabInvalid
                | RuntimeNotFound
                | RuntimeVersion
                | ProviderUnavailable
                | InvalidArgument
                | EmptyInput
                | TextTooLong
                | InvalidImage
                | InvalidMask
                | Disposed
                | InferenceFailed
                | Internal
                | Aborted
                | ClassEmbeddingsInvalid => code.as_str(),
            })
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(
            variants.len(),
            20,
            "ErrorCode::ALL lists every variant once"
        );
        let readme = include_str!("../../../README.md");
        for name in variants {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} in README"
            );
        }
    }
}
