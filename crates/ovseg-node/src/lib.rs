//! N-API glue over ovseg-core. Logic lives in the core; this file converts arguments and results,
//! runs heavy calls on the libuv pool, and turns core errors into JS errors with a stable `code`.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi::JsError;
use napi_derive::napi;
use ovseg_core::batcher::BatchOptions;
use ovseg_core::class_file::Vocabulary;
use ovseg_core::error::catch_panic;
use ovseg_core::graph::SessionOptions;
use ovseg_core::sam::{AmgOptions, SamMask, SamModel};
use ovseg_core::segment::{MaskInput, Mode, SamProposals, SegmentOptions, Segmentation};
use ovseg_core::{
    Cancel, ErrorCode, ExecutionProvider, Features, Model, ModelOptions, Named, Overflow, Pixels,
    Precision, PromptSource,
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

/// A core call on the JS thread: a panic becomes `INTERNAL` instead of unwinding into Node.
fn guarded<T>(f: impl FnOnce() -> ovseg_core::Result<T>) -> Result<T, Code> {
    catch_panic(f).map_err(coded)
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
    guarded(|| ovseg_core::init_runtime(&PathBuf::from(library_path))).map(Into::into)
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

impl From<Model> for NativeModel {
    fn from(model: Model) -> Self {
        NativeModel::new(model)
    }
}

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
    /// A JS number, not `u32`: napi would wrap 2**32 + 2 to 2.
    pub threads: Option<f64>,
    /// "manifest" | "none" | a path to a prompt `.npy`.
    pub prompts: String,
    /// Cross-request batching of `segment()`'s crops; absent: off.
    pub batch: Option<NativeBatchOptions>,
    /// "float32" | "int8" | "float16".
    pub precision: String,
}

#[napi(object)]
#[derive(Clone, Copy)]
pub struct NativeBatchOptions {
    /// Crops per image-encoder run (JS numbers: the core checks the range).
    pub max_crops: f64,
    pub max_wait_ms: f64,
    pub on_cpu: bool,
}

impl From<BatchOptions> for NativeBatchOptions {
    fn from(o: BatchOptions) -> Self {
        Self {
            max_crops: o.max_crops as f64,
            max_wait_ms: o.max_wait.as_secs_f64() * 1e3,
            on_cpu: o.on_cpu,
        }
    }
}

impl TryFrom<NativeLoadOptions> for ModelOptions {
    type Error = ovseg_core::Error;

    fn try_from(o: NativeLoadOptions) -> ovseg_core::Result<Self> {
        Ok(Self {
            provider: parse_named::<ExecutionProvider>(&o.execution_provider, "executionProvider")?,
            threads: o.threads.map(thread_count).transpose()?,
            prompts: match o.prompts.as_str() {
                "manifest" => PromptSource::Manifest,
                "none" => PromptSource::Disabled,
                path => PromptSource::File(PathBuf::from(path)),
            },
            batch: o
                .batch
                .map(|b| {
                    let crops = whole(b.max_crops, "batch.maxCrops")?;
                    BatchOptions::new(crops, b.max_wait_ms, b.on_cpu)
                })
                .transpose()?,
            precision: parse_named::<Precision>(&o.precision, "precision")?,
        })
    }
}

/// A whole `threads` count as itself (the core checks its range); a fraction is refused here.
fn thread_count(t: f64) -> ovseg_core::Result<usize> {
    whole(t, "threads")
}

/// A whole, non-negative JS number as a count (the core checks its range).
fn whole(t: f64, option: &str) -> ovseg_core::Result<usize> {
    if t.fract() != 0.0 || !(0.0..=9_007_199_254_740_992.0).contains(&t) {
        return Err(ovseg_core::Error::new(
            ErrorCode::InvalidArgument,
            format!("Expected a positive integer for `{option}` but received {t}"),
        ));
    }
    Ok(t as usize)
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
    /// What `segment()` runs with where a call gives nothing, every piece filled in, as JSON text.
    pub defaults: String,
    /// Cross-request batching (`null`: off).
    pub batch: Option<NativeBatchOptions>,
    pub precision: String,
}

#[napi]
pub struct NativeModel {
    inner: Mutex<Option<Arc<Model>>>,
}

/// `value` as one of `T`'s names, else `INVALID_ARGUMENT` naming the JS option.
fn parse_named<T: Named>(value: &str, option: &str) -> ovseg_core::Result<T> {
    T::parse(value).ok_or_else(|| {
        let names: Vec<String> = T::ALL.iter().map(|v| format!("'{}'", v.name())).collect();
        ovseg_core::Error::new(
            ErrorCode::InvalidArgument,
            format!(
                "Expected one of {} for `{option}` but received {value:?}",
                names.join(", ")
            ),
        )
    })
}

fn parse_overflow(name: &str) -> Result<Overflow, Code> {
    parse_named(name, "overflow").map_err(coded)
}

fn load_model(dir: &str, options: NativeLoadOptions) -> ovseg_core::Result<Model> {
    Model::load(&PathBuf::from(dir), &ModelOptions::try_from(options)?)
}

/// Loads a model directory off the event loop.
#[napi(ts_return_type = "Promise<NativeModel>")]
pub fn load_model_async(
    dir: String,
    options: NativeLoadOptions,
    signal: Option<AbortSignal>,
) -> AsyncTask<CoreTask<Model, NativeModel>> {
    core_task(move || load_model(&dir, options), signal)
}

/// Loads a model directory on the calling thread.
#[napi]
pub fn load_model_sync(dir: String, options: NativeLoadOptions) -> Result<NativeModel, Code> {
    guarded(|| load_model(&dir, options)).map(NativeModel::new)
}

#[napi(object)]
pub struct NativeSegment {
    /// `"generator"`, `"caller"` or `"sam"`.
    pub source: String,
    pub index: u32,
    pub valid: bool,
    pub used: bool,
    pub class_index: Option<u32>,
    pub score: f64,
    /// `[x0, y0, x1, y1]`, x1/y1 exclusive, at the original size.
    pub bbox: Option<Vec<u32>>,
    pub area: f64,
}

#[napi(object)]
pub struct NativeTimings {
    pub resize_ms: f64,
    pub generator_ms: f64,
    pub sam_ms: f64,
    pub crop_ms: f64,
    pub text_ms: f64,
    pub image_encoder_ms: f64,
    pub aggregate_ms: f64,
    pub session_ms: f64,
    pub total_ms: f64,
}

#[napi(object)]
pub struct NativeSegmentation {
    /// `[height * width]` class index per pixel, over Rust-owned memory.
    pub labels: Uint16Array,
    pub width: u32,
    pub height: u32,
    pub classes: Vec<String>,
    pub class_pixels: Vec<f64>,
    pub segments: Vec<NativeSegment>,
    /// `[used masks, classes]`.
    pub probabilities: Float32Array,
    pub scores: Option<Float32Array>,
    pub crops: Option<Float32Array>,
    /// `[SAM segments, height, width]`, when `samOptions.returnMasks`.
    pub sam_masks: Option<Uint8Array>,
    pub processing_width: u32,
    pub processing_height: u32,
    pub timings: NativeTimings,
}

impl From<Segmentation> for NativeSegmentation {
    fn from(s: Segmentation) -> Self {
        let t = s.timings;
        Self {
            labels: Uint16Array::new(s.labels),
            width: s.width as u32,
            height: s.height as u32,
            classes: s.classes,
            class_pixels: s.class_pixels.iter().map(|&n| n as f64).collect(),
            segments: s
                .segments
                .into_iter()
                .map(|g| NativeSegment {
                    source: g.source.name().to_owned(),
                    index: g.index as u32,
                    valid: g.valid,
                    used: g.used,
                    class_index: g.class.map(u32::from),
                    score: f64::from(g.score),
                    bbox: g.bbox.map(|b| b.iter().map(|&v| v as u32).collect()),
                    area: g.area as f64,
                })
                .collect(),
            probabilities: Float32Array::new(s.probabilities),
            scores: s.scores.map(Float32Array::new),
            crops: s.crops.map(Float32Array::new),
            sam_masks: s.sam_masks.map(Uint8Array::new),
            processing_width: s.processing_size.1 as u32,
            processing_height: s.processing_size.0 as u32,
            timings: NativeTimings {
                resize_ms: t.resize_ms,
                generator_ms: t.generator_ms,
                sam_ms: t.sam_ms,
                crop_ms: t.crop_ms,
                text_ms: t.text_ms,
                image_encoder_ms: t.image_encoder_ms,
                aggregate_ms: t.aggregate_ms,
                session_ms: t.session_ms,
                total_ms: t.total_ms,
            },
        }
    }
}

/// Validated in TS; `None` = the model's default.
#[napi(object)]
pub struct NativeSegmentOptions {
    /// `"semantic"` or `"demo"`.
    pub mode: Option<String>,
    pub threshold: Option<f64>,
    pub lambda: Option<f64>,
    pub generator: bool,
    pub templates: Option<Vec<String>>,
    pub overflow: String,
    pub max_pixels: f64,
    pub scores: bool,
    pub crops: bool,
}

#[napi(object)]
pub struct NativeSavedClasses {
    pub classes: Vec<String>,
    pub templates: Vec<String>,
}

impl From<Vocabulary> for NativeSavedClasses {
    fn from(v: Vocabulary) -> Self {
        Self {
            classes: v.classes,
            templates: v.templates,
        }
    }
}

#[napi(object)]
pub struct NativeStats {
    pub text_encoder_runs: f64,
    pub class_cache_hits: f64,
    pub class_cache_misses: f64,
    pub crop_batches: f64,
}

/// The inputs of one `segment` call, read in place.
pub struct SegmentArgs {
    rgb: Uint8Array,
    width: u32,
    height: u32,
    masks: Option<Either<Float32Array, Uint8Array>>,
    classes: Vec<String>,
    options: SegmentOptions,
}

fn segment_args(
    rgb: Uint8Array,
    (width, height): (u32, u32),
    masks: Option<Either<Float32Array, Uint8Array>>,
    classes: Vec<String>,
    o: NativeSegmentOptions,
    sam: Option<SamProposals>,
) -> Result<SegmentArgs, Code> {
    let mode = o
        .mode
        .map(|m| parse_named::<Mode>(&m, "mode"))
        .transpose()
        .map_err(coded)?;
    let options = SegmentOptions {
        mode,
        threshold: o.threshold.map(|v| v as f32),
        lambda: o.lambda.map(|v| v as f32),
        generator: o.generator,
        templates: o.templates,
        overflow: parse_overflow(&o.overflow)?,
        max_pixels: o.max_pixels as usize,
        scores: o.scores,
        crops: o.crops,
        sam,
    };
    Ok(SegmentArgs {
        rgb,
        width,
        height,
        masks,
        classes,
        options,
    })
}

fn run_segment(model: &Model, a: &SegmentArgs) -> ovseg_core::Result<Segmentation> {
    let masks = a.masks.as_ref().map(|m| match m {
        Either::A(soft) => MaskInput::Soft(soft),
        Either::B(binary) => MaskInput::Binary(binary),
    });
    model.segment(
        &a.rgb,
        (a.height as usize, a.width as usize),
        masks,
        &a.classes,
        &a.options,
    )
}

/// A core call on the libuv pool: `job` computes off the event loop, `J::from` converts the result
/// on the JS thread, and a core error becomes a JS error with its code.
pub struct CoreTask<O, J> {
    job: Option<Box<dyn FnOnce() -> ovseg_core::Result<O> + Send>>,
    cancel: Cancel,
    js: PhantomData<fn() -> J>,
}

/// `job` on the libuv pool. napi cancels a task that has not started when `signal` fires; one that
/// is running stops at its next stage or mid-graph through its `Cancel` token (`ABORTED`).
fn core_task<O, J>(
    job: impl FnOnce() -> ovseg_core::Result<O> + Send + 'static,
    signal: Option<AbortSignal>,
) -> AsyncTask<CoreTask<O, J>>
where
    CoreTask<O, J>: Task,
{
    let cancel = Cancel::new();
    if let Some(signal) = &signal {
        let cancel = cancel.clone();
        signal.on_abort(move || cancel.cancel());
    }
    let task = CoreTask {
        job: Some(Box::new(job)),
        cancel,
        js: PhantomData,
    };
    AsyncTask::with_optional_signal(task, signal)
}

impl<O: Send + 'static, J: ToNapiValue + TypeName + From<O>> Task for CoreTask<O, J> {
    type Output = ovseg_core::Result<O>;
    type JsValue = J;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        // A panic here would abort the process on a libuv thread.
        let job = self.job.take();
        Ok(catch_panic(|| {
            self.cancel.scope(job.expect("compute runs once"))
        }))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<J> {
        output.map(J::from).map_err(|e| coded_js(&env, e))
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
        ovseg_core::lock(&self.inner).clone().ok_or_else(|| {
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
    ) -> Result<AsyncTask<CoreTask<Features, NativeFeatures>>, Code> {
        let model = self.model()?;
        Ok(core_task(move || job(&model), signal))
    }

    #[napi]
    pub fn info(&self) -> Result<NativeModelInfo, Code> {
        let model = self.model()?;
        guarded(|| {
            Ok(NativeModelInfo {
                manifest: model.manifest.to_json(),
                dir: model.dir.display().to_string(),
                execution_provider: model.provider().name.to_owned(),
                execution_provider_reason: model.provider().reason.clone(),
                prompt_depth: model.prompt_depth() as u32,
                has_no_object: model.has_no_object(),
                defaults: model.manifest.segment_defaults().complete().to_json(),
                batch: model.batch_options().map(Into::into),
                precision: model.precision.name().to_owned(),
            })
        })
    }

    /// `[texts, contextLength]` token ids.
    #[napi]
    pub fn tokenize(&self, texts: Vec<String>, overflow: String) -> Result<Int32Array, Code> {
        let overflow = parse_overflow(&overflow)?;
        let model = self.model()?;
        guarded(|| model.tokenize(&texts, overflow)).map(Int32Array::new)
    }

    #[napi(ts_return_type = "Promise<NativeFeatures>")]
    pub fn encode_text(
        &self,
        texts: Vec<String>,
        overflow: String,
        normalize: bool,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<CoreTask<Features, NativeFeatures>>, Code> {
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
        let model = self.model()?;
        guarded(|| model.encode_text(&texts, overflow, normalize)).map(Into::into)
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
    ) -> Result<AsyncTask<CoreTask<Features, NativeFeatures>>, Code> {
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
        let model = self.model()?;
        guarded(|| model.encode_image(pixels_of(&pixels), masks.as_deref(), use_prompts, normalize))
            .map(Into::into)
    }

    #[napi(ts_return_type = "Promise<NativeFeatures>")]
    pub fn class_embeddings(
        &self,
        classes: Vec<String>,
        templates: Option<Vec<String>>,
        overflow: String,
        include_no_object: bool,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<CoreTask<Features, NativeFeatures>>, Code> {
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
        let model = self.model()?;
        guarded(|| {
            model.class_embeddings(&classes, templates.as_deref(), overflow, include_no_object)
        })
        .map(Into::into)
    }

    /// Saves the class matrix of `classes` to `path` (computing it unless cached).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save_class_embeddings(
        &self,
        path: String,
        classes: Vec<String>,
        templates: Option<Vec<String>>,
        overflow: String,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<CoreTask<(), ()>>, Code> {
        let overflow = parse_overflow(&overflow)?;
        let model = self.model()?;
        Ok(core_task(
            move || {
                model.save_class_embeddings(
                    &PathBuf::from(path),
                    &classes,
                    templates.as_deref(),
                    overflow,
                )
            },
            signal,
        ))
    }

    #[napi]
    pub fn save_class_embeddings_sync(
        &self,
        path: String,
        classes: Vec<String>,
        templates: Option<Vec<String>>,
        overflow: String,
    ) -> Result<(), Code> {
        let overflow = parse_overflow(&overflow)?;
        let model = self.model()?;
        guarded(|| {
            model.save_class_embeddings(
                &PathBuf::from(path),
                &classes,
                templates.as_deref(),
                overflow,
            )
        })
    }

    /// Loads a saved class matrix into the class-embedding cache; its classes and templates.
    #[napi(ts_return_type = "Promise<NativeSavedClasses>")]
    pub fn load_class_embeddings(
        &self,
        path: String,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<CoreTask<Vocabulary, NativeSavedClasses>>, Code> {
        let model = self.model()?;
        Ok(core_task(
            move || model.load_class_embeddings(&PathBuf::from(path)),
            signal,
        ))
    }

    #[napi]
    pub fn load_class_embeddings_sync(&self, path: String) -> Result<NativeSavedClasses, Code> {
        let model = self.model()?;
        guarded(|| model.load_class_embeddings(&PathBuf::from(path))).map(Into::into)
    }

    /// Segments an RGB image (`[height, width, 3]` bytes) with the model's generator and/or caller masks
    /// (`[masks, height, width]`).
    /// The buffers are read in place: do not modify them until the promise settles.
    #[napi(ts_return_type = "Promise<NativeSegmentation>")]
    #[allow(clippy::too_many_arguments)] // the JS call's positional arguments
    pub fn segment(
        &self,
        rgb: Uint8Array,
        width: u32,
        height: u32,
        masks: Option<Either<Float32Array, Uint8Array>>,
        classes: Vec<String>,
        options: NativeSegmentOptions,
        sam: Option<&NativeSamModel>,
        sam_options: Option<NativeAmgOptions>,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<CoreTask<Segmentation, NativeSegmentation>>, Code> {
        let sam = sam_proposals(sam, sam_options)?;
        let args = segment_args(rgb, (width, height), masks, classes, options, sam)?;
        let model = self.model()?;
        Ok(core_task(move || run_segment(&model, &args), signal))
    }

    #[napi]
    #[allow(clippy::too_many_arguments)] // the JS call's positional arguments
    pub fn segment_sync(
        &self,
        rgb: Uint8Array,
        width: u32,
        height: u32,
        masks: Option<Either<Float32Array, Uint8Array>>,
        classes: Vec<String>,
        options: NativeSegmentOptions,
        sam: Option<&NativeSamModel>,
        sam_options: Option<NativeAmgOptions>,
    ) -> Result<NativeSegmentation, Code> {
        let sam = sam_proposals(sam, sam_options)?;
        let args = segment_args(rgb, (width, height), masks, classes, options, sam)?;
        let model = self.model()?;
        guarded(|| run_segment(&model, &args)).map(Into::into)
    }

    /// Work counters: text-encoder runs, class-embedding cache hits/misses, batched crop runs.
    #[napi]
    pub fn stats(&self) -> Result<NativeStats, Code> {
        let model = self.model()?;
        let s = guarded(|| Ok(model.stats()))?;
        Ok(NativeStats {
            text_encoder_runs: s.text_encoder_runs as f64,
            class_cache_hits: s.class_cache_hits as f64,
            class_cache_misses: s.class_cache_misses as f64,
            crop_batches: s.crop_batches as f64,
        })
    }

    /// Releases the model (sessions free when the last pending call finishes). Idempotent.
    #[napi]
    pub fn dispose(&self) {
        ovseg_core::lock(&self.inner).take();
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        ovseg_core::lock(&self.inner).is_none()
    }
}

/// Options of SAM's automatic mask generator (validated in TS and in the core).
#[napi(object)]
#[derive(Clone, Copy)]
pub struct NativeAmgOptions {
    pub points_per_side: f64,
    pub points_per_batch: f64,
    pub pred_iou_thresh: f64,
    pub stability_score_thresh: f64,
    pub stability_score_offset: f64,
    pub box_nms_thresh: f64,
    pub crop_n_layers: f64,
    pub crop_nms_thresh: f64,
    pub crop_overlap_ratio: f64,
    pub crop_n_points_downscale_factor: f64,
    pub min_mask_region_area: f64,
    /// Masks passed on to CLIP by `segment()`, the highest predicted IoU first.
    pub max_masks: f64,
    /// `segment()` also returns those masks.
    pub return_masks: bool,
}

impl TryFrom<NativeAmgOptions> for AmgOptions {
    type Error = ovseg_core::Error;

    fn try_from(o: NativeAmgOptions) -> ovseg_core::Result<Self> {
        let options = Self {
            points_per_side: whole(o.points_per_side, "pointsPerSide")?,
            points_per_batch: whole(o.points_per_batch, "pointsPerBatch")?,
            pred_iou_thresh: o.pred_iou_thresh as f32,
            stability_score_thresh: o.stability_score_thresh as f32,
            stability_score_offset: o.stability_score_offset as f32,
            box_nms_thresh: o.box_nms_thresh as f32,
            crop_n_layers: whole(o.crop_n_layers, "cropNLayers")?,
            crop_nms_thresh: o.crop_nms_thresh as f32,
            crop_overlap_ratio: o.crop_overlap_ratio,
            crop_n_points_downscale_factor: whole(
                o.crop_n_points_downscale_factor,
                "cropNPointsDownscaleFactor",
            )?,
            min_mask_region_area: whole(o.min_mask_region_area, "minMaskRegionArea")? as u64,
        };
        options.check()?;
        Ok(options)
    }
}

fn sam_proposals(
    sam: Option<&NativeSamModel>,
    options: Option<NativeAmgOptions>,
) -> Result<Option<SamProposals>, Code> {
    let Some(sam) = sam else { return Ok(None) };
    let o = options.ok_or_else(|| {
        coded(ovseg_core::Error::new(
            ErrorCode::InvalidArgument,
            "SAM options are missing",
        ))
    })?;
    let max_masks = whole(o.max_masks, "maxMasks").map_err(coded)?;
    if max_masks == 0 {
        return Err(coded(ovseg_core::Error::new(
            ErrorCode::InvalidArgument,
            "Expected a positive integer for `maxMasks` but received 0",
        )));
    }
    Ok(Some(SamProposals {
        model: sam.model()?,
        options: AmgOptions::try_from(o).map_err(coded)?,
        max_masks,
        return_masks: o.return_masks,
    }))
}

#[napi(object)]
pub struct NativeSamLoadOptions {
    /// "cpu" | "cuda" | "auto".
    pub execution_provider: String,
    pub threads: Option<f64>,
}

fn load_sam(dir: &str, o: NativeSamLoadOptions) -> ovseg_core::Result<SamModel> {
    let provider = parse_named::<ExecutionProvider>(&o.execution_provider, "executionProvider")?;
    let threads = o.threads.map(thread_count).transpose()?;
    SamModel::load(&PathBuf::from(dir), SessionOptions { provider, threads })
}

/// Loads a SAM proposal-model directory off the event loop.
#[napi(ts_return_type = "Promise<NativeSamModel>")]
pub fn load_sam_model_async(
    dir: String,
    options: NativeSamLoadOptions,
    signal: Option<AbortSignal>,
) -> AsyncTask<CoreTask<SamModel, NativeSamModel>> {
    core_task(move || load_sam(&dir, options), signal)
}

/// Loads a SAM proposal-model directory on the calling thread.
#[napi]
pub fn load_sam_model_sync(
    dir: String,
    options: NativeSamLoadOptions,
) -> Result<NativeSamModel, Code> {
    guarded(|| load_sam(&dir, options)).map(NativeSamModel::from)
}

/// SAM's automatic masks: `count` masks `[count, height, width]` (1 inside) in the generator's
/// order (highest predicted IoU first), with per mask its box `[x0, y0, x1, y1]` (inclusive),
/// area, predicted IoU, stability score and prompt point `[x, y]`.
#[napi(object)]
pub struct NativeSamMasks {
    pub count: u32,
    pub masks: Uint8Array,
    pub boxes: Vec<u32>,
    pub areas: Vec<f64>,
    pub predicted_iou: Vec<f64>,
    pub stability_score: Vec<f64>,
    pub points: Vec<f64>,
    pub session_ms: f64,
}

/// The core's masks and the time inside ONNX Runtime.
type SamGeneration = (Vec<SamMask>, f64);

impl From<SamGeneration> for NativeSamMasks {
    fn from((masks, session_ms): SamGeneration) -> Self {
        Self {
            count: masks.len() as u32,
            boxes: masks.iter().flat_map(|m| m.bbox).collect(),
            areas: masks.iter().map(|m| m.area as f64).collect(),
            predicted_iou: masks.iter().map(|m| f64::from(m.predicted_iou)).collect(),
            stability_score: masks.iter().map(|m| f64::from(m.stability_score)).collect(),
            points: masks.iter().flat_map(|m| m.point).collect(),
            masks: Uint8Array::new(masks.into_iter().flat_map(|m| m.mask).collect()),
            session_ms,
        }
    }
}

#[napi(object)]
pub struct NativeSamInfo {
    pub name: String,
    pub dir: String,
    pub image_size: u32,
}

#[napi]
pub struct NativeSamModel {
    inner: Mutex<Option<Arc<SamModel>>>,
}

impl From<SamModel> for NativeSamModel {
    fn from(model: SamModel) -> Self {
        Self {
            inner: Mutex::new(Some(Arc::new(model))),
        }
    }
}

impl NativeSamModel {
    fn model(&self) -> Result<Arc<SamModel>, Code> {
        ovseg_core::lock(&self.inner).clone().ok_or_else(|| {
            napi::Error::new(
                Code(ErrorCode::Disposed.as_str()),
                "the SAM model was disposed".to_owned(),
            )
        })
    }
}

#[napi]
impl NativeSamModel {
    #[napi]
    pub fn info(&self) -> Result<NativeSamInfo, Code> {
        let m = self.model()?;
        Ok(NativeSamInfo {
            name: m.manifest.name.clone(),
            dir: m.dir.display().to_string(),
            image_size: m.manifest.image_size as u32,
        })
    }

    /// Automatic mask generation on an RGB image (`[height, width, 3]` bytes, read in place).
    #[napi(ts_return_type = "Promise<NativeSamMasks>")]
    pub fn generate(
        &self,
        rgb: Uint8Array,
        width: u32,
        height: u32,
        options: NativeAmgOptions,
        signal: Option<AbortSignal>,
    ) -> Result<AsyncTask<CoreTask<SamGeneration, NativeSamMasks>>, Code> {
        let model = self.model()?;
        let options = AmgOptions::try_from(options).map_err(coded)?;
        let size = (height as usize, width as usize);
        if rgb.len() != size.0 * size.1 * 3 || rgb.is_empty() {
            return Err(coded(ovseg_core::Error::new(
                ErrorCode::InvalidImage,
                format!("expected {width}x{height}x3 RGB bytes, got {}", rgb.len()),
            )));
        }
        Ok(core_task(
            move || model.generate(&rgb, size, &options),
            signal,
        ))
    }

    /// Releases the model (sessions free when the last pending call finishes). Idempotent.
    #[napi]
    pub fn dispose(&self) {
        ovseg_core::lock(&self.inner).take();
    }
}
