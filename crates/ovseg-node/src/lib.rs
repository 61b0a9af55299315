//! N-API glue over ovseg-core. Logic lives in the core; this file converts arguments and results,
//! runs heavy calls on the libuv pool, and turns core errors into JS errors with a stable `code`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi::JsError;
use napi_derive::napi;
use ovseg_core::{
    ErrorCode, ExecutionProvider, Features, Model, ModelOptions, Overflow, Pixels, PromptSource,
};

/// A JS error code (`err.code`).
pub struct Code(&'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

fn coded(e: ovseg_core::Error) -> napi::Error<Code> {
    napi::Error::new(Code(e.code.as_str()), e.message)
}

fn invalid(message: String) -> napi::Error<Code> {
    napi::Error::new(Code(ErrorCode::InvalidArgument.as_str()), message)
}

/// For async tasks, whose rejection must be a plain `napi::Error`: build the coded JS error object.
fn coded_js(env: &Env, e: ovseg_core::Error) -> napi::Error {
    napi::Error::from(JsError::from(coded(e)).into_unknown(*env))
}

// ---------------------------------------------------------------------------------------------
// Runtime

#[napi(object)]
pub struct RuntimeInfo {
    pub library_path: String,
    pub version: String,
}

impl From<ovseg_core::RuntimeInfo> for RuntimeInfo {
    fn from(info: ovseg_core::RuntimeInfo) -> Self {
        Self {
            library_path: info.library_path.display().to_string(),
            version: info.version,
        }
    }
}

/// Loads ONNX Runtime's shared library (an absolute path). Idempotent for the same path.
#[napi]
pub fn init_runtime(library_path: String) -> Result<RuntimeInfo, Code> {
    ovseg_core::init_runtime(&PathBuf::from(library_path))
        .map(Into::into)
        .map_err(coded)
}

/// The loaded ONNX Runtime, or null.
#[napi]
pub fn runtime_info() -> Option<RuntimeInfo> {
    ovseg_core::runtime_info().map(Into::into)
}

// ---------------------------------------------------------------------------------------------
// Results

#[napi(object)]
pub struct NativeFeatures {
    /// `[rows, dim]`, row-major, over Rust-owned memory.
    pub data: Float32Array,
    pub rows: u32,
    pub dim: u32,
}

/// Address of the last feature buffer handed to JS (diagnostics: proves results are not copied).
static LAST_HANDOFF: AtomicUsize = AtomicUsize::new(0);

impl From<Features> for NativeFeatures {
    fn from(f: Features) -> Self {
        LAST_HANDOFF.store(f.data.as_ptr() as usize, Ordering::Relaxed);
        Self {
            data: Float32Array::new(f.data),
            rows: f.rows as u32,
            dim: f.dim as u32,
        }
    }
}

/// Diagnostics: the address of the last feature buffer Rust handed to JS.
#[napi(js_name = "__lastHandoffAddress")]
pub fn last_handoff_address() -> BigInt {
    BigInt::from(LAST_HANDOFF.load(Ordering::Relaxed) as u64)
}

/// Diagnostics: the address of a typed array's first element.
#[napi(js_name = "__dataAddress")]
pub fn data_address(view: Float32Array) -> BigInt {
    BigInt::from(view.as_ptr() as u64)
}

// ---------------------------------------------------------------------------------------------
// Model

#[napi(object)]
pub struct NativeLoadOptions {
    /// "cpu" | "cuda" | "auto".
    pub execution_provider: String,
    pub threads: Option<u32>,
    /// "manifest" | "none" | a path to a prompt `.npy`.
    pub prompts: String,
}

impl TryFrom<NativeLoadOptions> for ModelOptions {
    type Error = ovseg_core::Error;

    fn try_from(o: NativeLoadOptions) -> ovseg_core::Result<Self> {
        Ok(Self {
            provider: ExecutionProvider::parse(&o.execution_provider)?,
            threads: o.threads.map(|t| t as usize),
            prompts: match o.prompts.as_str() {
                "manifest" => PromptSource::Manifest,
                "none" => PromptSource::Disabled,
                path => PromptSource::File(PathBuf::from(path)),
            },
        })
    }
}

#[napi(object)]
pub struct NativeModelInfo {
    /// The manifest, as JSON text.
    pub manifest: String,
    pub dir: String,
    pub execution_provider: String,
    pub execution_provider_reason: String,
    pub prompt_depth: u32,
    pub has_no_object: bool,
}

#[napi]
pub struct NativeModel {
    inner: Mutex<Option<Arc<Model>>>,
}

fn parse_overflow(name: &str) -> Result<Overflow, Code> {
    match name {
        "error" => Ok(Overflow::Error),
        "truncate" => Ok(Overflow::Truncate),
        other => Err(invalid(format!(
            "Expected 'error' or 'truncate' for `overflow` but received {other:?}"
        ))),
    }
}

fn load_model(dir: &str, options: NativeLoadOptions) -> ovseg_core::Result<Model> {
    Model::load(&PathBuf::from(dir), &ModelOptions::try_from(options)?)
}

pub struct LoadTask {
    dir: String,
    options: Option<NativeLoadOptions>,
}

impl Task for LoadTask {
    type Output = ovseg_core::Result<Model>;
    type JsValue = NativeModel;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let options = self.options.take().expect("compute runs once");
        Ok(load_model(&self.dir, options))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<NativeModel> {
        output.map(NativeModel::new).map_err(|e| coded_js(&env, e))
    }
}

/// Loads a model directory off the event loop.
#[napi(ts_return_type = "Promise<NativeModel>")]
pub fn load_model_async(
    dir: String,
    options: NativeLoadOptions,
    signal: Option<AbortSignal>,
) -> AsyncTask<LoadTask> {
    AsyncTask::with_optional_signal(
        LoadTask {
            dir,
            options: Some(options),
        },
        signal,
    )
}

/// Loads a model directory on the calling thread.
#[napi]
pub fn load_model_sync(dir: String, options: NativeLoadOptions) -> Result<NativeModel, Code> {
    load_model(&dir, options)
        .map(NativeModel::new)
        .map_err(coded)
}

type ModelJob = Box<dyn FnOnce(&Model) -> ovseg_core::Result<Features> + Send>;

/// One heavy model call, run on the libuv pool.
pub struct ModelTask {
    model: Arc<Model>,
    job: Option<ModelJob>,
}

impl Task for ModelTask {
    type Output = ovseg_core::Result<Features>;
    type JsValue = NativeFeatures;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let job = self.job.take().expect("compute runs once");
        Ok(job(&self.model))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<NativeFeatures> {
        output.map(Into::into).map_err(|e| coded_js(&env, e))
    }
}

/// Pixels as the caller passes them: normalized float32 NCHW or RGB bytes NHWC.
fn pixels_of(pixels: &Either<Float32Array, Uint8Array>) -> Pixels<'_> {
    match pixels {
        Either::A(f) => Pixels::Normalized(f),
        Either::B(b) => Pixels::Rgb8(b),
    }
}

#[napi]
impl NativeModel {
    fn new(model: Model) -> Self {
        Self {
            inner: Mutex::new(Some(Arc::new(model))),
        }
    }

    fn model(&self) -> Result<Arc<Model>, Code> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| {
                napi::Error::new(
                    Code(ErrorCode::Disposed.as_str()),
                    "the model was disposed".to_owned(),
                )
            })
    }

    fn task(
        &self,
        signal: Option<AbortSignal>,
        job: impl FnOnce(&Model) -> ovseg_core::Result<Features> + Send + 'static,
    ) -> Result<AsyncTask<ModelTask>, Code> {
        Ok(AsyncTask::with_optional_signal(
            ModelTask {
                model: self.model()?,
                job: Some(Box::new(job)),
            },
            signal,
        ))
    }

    #[napi]
    pub fn info(&self) -> Result<NativeModelInfo, Code> {
        let model = self.model()?;
        Ok(NativeModelInfo {
            manifest: model.manifest.to_json(),
            dir: model.dir.display().to_string(),
            execution_provider: model.provider().name.to_owned(),
            execution_provider_reason: model.provider().reason.clone(),
            prompt_depth: model.prompt_depth() as u32,
            has_no_object: model.has_no_object(),
        })
    }

    /// `[texts, contextLength]` token ids.
    #[napi]
    pub fn tokenize(&self, texts: Vec<String>, overflow: String) -> Result<Int32Array, Code> {
        let ids = self
            .model()?
            .tokenize(&texts, parse_overflow(&overflow)?)
            .map_err(coded)?;
        Ok(Int32Array::new(ids))
    }

    #[napi(ts_return_type = "Promise<NativeFeatures>")]
    pub fn encode_text(
        &self,
        texts: Vec<String>,
        overflow: String,
        normalize: bool,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<ModelTask>, Code> {
        let overflow = parse_overflow(&overflow)?;
        self.task(signal, move |m| m.encode_text(&texts, overflow, normalize))
    }

    #[napi]
    pub fn encode_text_sync(
        &self,
        texts: Vec<String>,
        overflow: String,
        normalize: bool,
    ) -> Result<NativeFeatures, Code> {
        let overflow = parse_overflow(&overflow)?;
        self.model()?
            .encode_text(&texts, overflow, normalize)
            .map(Into::into)
            .map_err(coded)
    }

    /// The caller must not modify `pixels` / `masks` until the promise settles (they are read in place).
    #[napi(ts_return_type = "Promise<NativeFeatures>")]
    pub fn encode_image(
        &self,
        pixels: Either<Float32Array, Uint8Array>,
        masks: Option<Uint8Array>,
        use_prompts: bool,
        normalize: bool,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<ModelTask>, Code> {
        self.task(signal, move |m| {
            m.encode_image(pixels_of(&pixels), masks.as_deref(), use_prompts, normalize)
        })
    }

    #[napi]
    pub fn encode_image_sync(
        &self,
        pixels: Either<Float32Array, Uint8Array>,
        masks: Option<Uint8Array>,
        use_prompts: bool,
        normalize: bool,
    ) -> Result<NativeFeatures, Code> {
        self.model()?
            .encode_image(pixels_of(&pixels), masks.as_deref(), use_prompts, normalize)
            .map(Into::into)
            .map_err(coded)
    }

    #[napi(ts_return_type = "Promise<NativeFeatures>")]
    pub fn class_embeddings(
        &self,
        classes: Vec<String>,
        templates: Option<Vec<String>>,
        overflow: String,
        include_no_object: bool,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<ModelTask>, Code> {
        let overflow = parse_overflow(&overflow)?;
        self.task(signal, move |m| {
            m.class_embeddings(&classes, templates.as_deref(), overflow, include_no_object)
        })
    }

    #[napi]
    pub fn class_embeddings_sync(
        &self,
        classes: Vec<String>,
        templates: Option<Vec<String>>,
        overflow: String,
        include_no_object: bool,
    ) -> Result<NativeFeatures, Code> {
        let overflow = parse_overflow(&overflow)?;
        self.model()?
            .class_embeddings(&classes, templates.as_deref(), overflow, include_no_object)
            .map(Into::into)
            .map_err(coded)
    }

    /// Releases the model (sessions free when the last pending call finishes). Idempotent.
    #[napi]
    pub fn dispose(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_none()
    }
}
