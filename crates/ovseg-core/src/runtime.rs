//! Loading ONNX Runtime's shared library (the `ort` crate's `load-dynamic`) and choosing the
//! execution provider of a session.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::ep::{self, ExecutionProvider as _};
use ort::session::builder::SessionBuilder;

use crate::error::{bail, Error, ErrorCode, Result};

/// The oldest ONNX Runtime this build runs with (its C API version, `ort`'s `api-22` feature).
pub const MIN_ORT_MINOR: u32 = 22;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub library_path: PathBuf,
    pub version: String,
}

struct Loaded {
    info: RuntimeInfo,
    environment: ort::environment::Environment,
}

static RUNTIME: Mutex<Option<Loaded>> = Mutex::new(None);

/// Loads ONNX Runtime from `path` (absolute; relative paths would resolve against the `node`
/// executable). A process holds one ONNX Runtime: loading a second, different path is an error.
pub fn init_runtime(path: &Path) -> Result<RuntimeInfo> {
    let mut loaded = crate::lock(&RUNTIME);
    if let Some(Loaded { info, .. }) = loaded.as_ref() {
        if info.library_path == path {
            return Ok(info.clone());
        }
        bail!(
            InvalidArgument,
            "ONNX Runtime is already loaded from {} in this process; cannot also load {}",
            info.library_path.display(),
            path.display()
        );
    }
    if !path.is_absolute() {
        bail!(
            InvalidArgument,
            "the ONNX Runtime library path must be absolute, got {}",
            path.display()
        );
    }
    if !path.is_file() {
        bail!(
            RuntimeNotFound,
            "ONNX Runtime library {} does not exist (ovseg needs libonnxruntime 1.{MIN_ORT_MINOR} or newer)",
            path.display()
        );
    }
    let version = library_version(path)?;
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if minor < MIN_ORT_MINOR {
        bail!(
            RuntimeVersion,
            "ONNX Runtime {version} at {} is too old: ovseg needs 1.{MIN_ORT_MINOR} or newer",
            path.display()
        );
    }
    let builder = ort::init_from(path).map_err(|e| {
        let code = match e {
            ort::LoadDynamicError::BadVersion { .. }
            | ort::LoadDynamicError::InvalidVersionString => ErrorCode::RuntimeVersion,
            _ => ErrorCode::RuntimeNotFound,
        };
        Error::new(code, e.to_string())
    })?;
    let environment = builder.with_name("ovseg").build().map_err(|e| {
        Error::new(
            ErrorCode::RuntimeNotFound,
            format!("cannot create the ONNX Runtime environment: {e}"),
        )
    })?;
    let info = RuntimeInfo {
        library_path: path.to_path_buf(),
        version,
    };
    *loaded = Some(Loaded {
        info: info.clone(),
        environment,
    });
    Ok(info)
}

/// The loaded runtime, if any.
pub fn runtime_info() -> Option<RuntimeInfo> {
    crate::lock(&RUNTIME).as_ref().map(|l| l.info.clone())
}

/// The process's ONNX Runtime environment (sessions are created in it; ONNX Runtime allows one).
pub fn environment() -> Result<ort::environment::Environment> {
    crate::lock(&RUNTIME)
        .as_ref()
        .map(|l| l.environment.clone())
        .ok_or_else(|| {
            Error::new(
                ErrorCode::RuntimeNotFound,
                "ONNX Runtime is not loaded yet: call init_runtime first",
            )
        })
}

#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
    get_version_string: unsafe extern "C" fn() -> *const c_char,
}

/// Reads the library's version through `OrtGetApiBase()->GetVersionString()` before `ort` uses it,
/// so a wrong or old file is a coded error instead of a failure deep inside the C API.
fn library_version(path: &Path) -> Result<String> {
    let not_ort = |why: String| {
        Error::new(
            ErrorCode::RuntimeNotFound,
            format!("{} {why}", path.display()),
        )
    };
    // SAFETY: loading a shared library runs its initializers; the path is what the user chose as ONNX Runtime.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| not_ort(format!("cannot be loaded: {e}")))?;
    // SAFETY: the signature is the one ONNX Runtime's C API declares for OrtGetApiBase.
    let get_base =
        unsafe { lib.get::<unsafe extern "C" fn() -> *const OrtApiBase>(b"OrtGetApiBase") }
            .map_err(|_| not_ort("is not ONNX Runtime (no OrtGetApiBase)".into()))?;
    // SAFETY: OrtGetApiBase takes no arguments and returns a pointer to a static struct.
    let base = unsafe { get_base() };
    if base.is_null() {
        return Err(not_ort("returned no API base".into()));
    }
    // SAFETY: GetVersionString returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(((*base).get_version_string)()) };
    // The library stays loaded: `ort` opens the same file next and keeps it for the process.
    std::mem::forget(lib);
    version.to_str().map(str::to_owned).map_err(|_| {
        Error::new(
            ErrorCode::RuntimeVersion,
            "ONNX Runtime's version string is not UTF-8",
        )
    })
}

/// Which execution provider sessions should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    /// CUDA when it can be created, else CPU.
    Auto,
}

impl crate::Named for ExecutionProvider {
    const ALL: &'static [Self] = &[Self::Cpu, Self::Cuda, Self::Auto];

    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        }
    }
}

/// The provider a model's sessions run on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderChoice {
    /// "cpu" or "cuda".
    pub name: &'static str,
    pub reason: String,
}

const CUDA_HELP: &str = "The CUDA execution provider needs a GPU build of ONNX Runtime \
(libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so next to its library, e.g. the \
onnxruntime-gpu wheel's capi/ folder) and the CUDA and cuDNN 9 libraries that build was made for \
(CUDA 13 for onnxruntime-gpu 1.31) on the library path: see docs/install.md, \"CUDA\".";

/// Registers the provider on a session builder.
pub fn apply_provider(
    builder: &mut SessionBuilder,
    provider: ExecutionProvider,
) -> Result<ProviderChoice> {
    match provider {
        ExecutionProvider::Cpu => Ok(ProviderChoice {
            name: "cpu",
            reason: "requested".into(),
        }),
        ExecutionProvider::Cuda => match register_cuda(builder) {
            Ok(()) => Ok(ProviderChoice {
                name: "cuda",
                reason: "requested".into(),
            }),
            Err(why) => bail!(
                ProviderUnavailable,
                "CUDA execution provider unavailable: {why}. {CUDA_HELP}"
            ),
        },
        ExecutionProvider::Auto => match register_cuda(builder) {
            Ok(()) => Ok(ProviderChoice {
                name: "cuda",
                reason: "auto: the CUDA execution provider was created".into(),
            }),
            Err(why) => Ok(ProviderChoice {
                name: "cpu",
                reason: format!("auto: CUDA unavailable ({why})"),
            }),
        },
    }
}

fn register_cuda(builder: &mut SessionBuilder) -> std::result::Result<(), String> {
    let cuda = ep::CUDA::default();
    match ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => return Err("this ONNX Runtime build has no CUDA execution provider".into()),
        Err(e) => return Err(e.to_string()),
    }
    cuda.register(builder).map_err(|e| e.to_string())
}
