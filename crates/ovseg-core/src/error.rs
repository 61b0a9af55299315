//! One error type for the whole core: a stable code plus a human message.
//!
//! The code's string form (`ErrorCode::as_str`) is what JavaScript sees as `err.code`;
//! it is part of the public API and never changes meaning.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
}

impl ErrorCode {
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
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    #[cold]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

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
    fn every_code_is_in_the_readme_table_and_the_typescript_union() {
        use ErrorCode::*;
        let all = [
            ModelNotFound,
            ManifestInvalid,
            ManifestVersion,
            GraphMismatch,
            PromptsInvalid,
            NoObjectInvalid,
            VocabInvalid,
            RuntimeNotFound,
            RuntimeVersion,
            ProviderUnavailable,
            InvalidArgument,
            EmptyInput,
            TextTooLong,
            InvalidImage,
            InvalidMask,
            Disposed,
            InferenceFailed,
            Internal,
            Aborted,
        ];
        // A new variant fails to compile here until it is added to `all` above.
        for code in all {
            match code {
                ModelNotFound | ManifestInvalid | ManifestVersion | GraphMismatch
                | PromptsInvalid | NoObjectInvalid | VocabInvalid | RuntimeNotFound
                | RuntimeVersion | ProviderUnavailable | InvalidArgument | EmptyInput
                | TextTooLong | InvalidImage | InvalidMask | Disposed | InferenceFailed
                | Internal | Aborted => {}
            }
        }
        let readme = include_str!("../../../README.md");
        let typescript = include_str!("../../../ts/errors.ts");
        for code in all {
            let name = code.as_str();
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} in README"
            );
            assert!(
                typescript.contains(&format!("| '{name}'")),
                "{name} in ts/errors.ts"
            );
        }
    }
}
