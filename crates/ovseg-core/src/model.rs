//! A loaded model directory: manifest, tokenizer, both encoders, mask prompts, no-object embedding.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::batcher::{BatchOptions, Batcher, Rows, Ticket};
use crate::class_embeddings::{
    class_key, ensemble_templates, fill_templates, l2_normalize_rows, ClassEmbeddingCache,
};
use crate::error::{bail, Error, ErrorCode, Result};
use crate::features::Features;
use crate::graph::SessionOptions;
use crate::image_encoder::{ImageEncoder, Pixels};
use crate::keep_mask::patch_keep_mask;
use crate::manifest::{Manifest, Precision};
use crate::mask_crop::MaskCrops;
use crate::mask_generator::{MaskGenerator, Proposals};
use crate::mask_prompts::MaskPromptSet;
use crate::npy;
use crate::runtime::{runtime_info, ExecutionProvider, ProviderChoice};
use crate::tokenizer::{Overflow, Tokenizer};

/// Which mask prompts the image encoder substitutes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PromptSource {
    /// The manifest's `maskPrompts` (none if it names none).
    #[default]
    Manifest,
    /// No substitution (plain CLIP on the masked crop).
    Disabled,
    /// Another `[depth, patches or 1, width]` float32 `.npy` file.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub provider: ExecutionProvider,
    pub threads: Option<usize>,
    pub prompts: PromptSource,
    /// Cross-request batching of `segment()`'s crops; `None`: each call runs its own crops. On the
    /// CPU provider only with `on_cpu`.
    pub batch: Option<BatchOptions>,
    /// The CLIP encoders to load: float32, or an int8 / float16 pair the manifest names.
    pub precision: Precision,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            provider: ExecutionProvider::default(),
            threads: None,
            prompts: PromptSource::default(),
            batch: Some(BatchOptions::default()),
            precision: Precision::default(),
        }
    }
}

pub struct Model {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub precision: Precision,
    tokenizer: Tokenizer,
    text: crate::text_encoder::TextEncoder,
    image: ImageEncoder,
    generator: Option<MaskGenerator>,
    prompts: MaskPromptSet,
    /// L2-normalized `[embed_dim]`.
    no_object: Option<Vec<f32>>,
    class_cache: Mutex<ClassEmbeddingCache>,
    /// Crop outputs kept between segment() calls: a fresh 100-crop output is tens of MB of new
    /// pages to fault in per call, a reused one is resident. One per concurrent call at most.
    crop_buffers: Mutex<Vec<MaskCrops>>,
    batcher: Option<Batcher>,
}

/// Counters that show what work a model did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelStats {
    /// Text-encoder graph runs (a class list x templates may take several).
    pub text_encoder_runs: u64,
    pub class_cache_hits: u64,
    pub class_cache_misses: u64,
    /// Image-encoder runs of `segment()`'s crops made by cross-request batching.
    pub crop_batches: u64,
}

/// Checks, before any file is read, that ONNX Runtime is loaded and `threads` is in range.
pub fn check_session_options(threads: Option<usize>) -> Result<()> {
    if runtime_info().is_none() {
        bail!(
            RuntimeNotFound,
            "ONNX Runtime is not loaded yet: call init_runtime with its library path first"
        );
    }
    if let Some(threads) = threads {
        let most = max_threads();
        if !(1..=most).contains(&threads) {
            bail!(
                InvalidArgument,
                "Expected an integer in 1..={most} (4 x the available cores) for `threads` but received {threads}"
            );
        }
    }
    Ok(())
}

/// The most intra-op threads a session may ask for: 4 x the available cores (more only thrash).
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, usize::from)
}

/// Class matrices kept per model (names x templates x overflow policy).
const CLASS_CACHE_CAPACITY: usize = 32;

impl Model {
    pub fn load(dir: &Path, options: &ModelOptions) -> Result<Self> {
        check_session_options(options.threads)?;
        let manifest = Manifest::read(dir)?;
        let clip = manifest.clip;
        let file = |name: &str, field: &str| crate::files::resolve(dir, name, field);
        let tokenizer = Tokenizer::from_file(
            &file(&manifest.tokenizer.vocab, "tokenizer.vocab")?,
            manifest.tokenizer.merges,
            clip.context_length,
        )?;
        if tokenizer.vocab_size() != clip.vocab_size {
            bail!(
                ManifestInvalid,
                "the tokenizer vocabulary has {} ids but clip.vocabSize is {}",
                tokenizer.vocab_size(),
                clip.vocab_size
            );
        }
        let prompts = match &options.prompts {
            PromptSource::Disabled => MaskPromptSet::none(&clip),
            PromptSource::File(path) => MaskPromptSet::from_file(path, &clip)?,
            PromptSource::Manifest => match &manifest.mask_prompts {
                None => MaskPromptSet::none(&clip),
                Some(spec) => {
                    let set =
                        MaskPromptSet::from_file(&file(&spec.file, "maskPrompts.file")?, &clip)?;
                    if set.depth != spec.depth {
                        bail!(
                            PromptsInvalid,
                            "{} holds depth {} but the manifest says {}",
                            spec.file,
                            set.depth,
                            spec.depth
                        );
                    }
                    set
                }
            },
        };
        let no_object = match &manifest.no_object_embedding {
            None => None,
            Some(name) => {
                let path = file(name, "noObjectEmbedding")?;
                let array = npy::read_f32(&path, clip.embed_dim, ErrorCode::NoObjectInvalid)?;
                npy::expect_shape(
                    &array,
                    &[&[1, clip.embed_dim], &[clip.embed_dim]],
                    name,
                    ErrorCode::NoObjectInvalid,
                )?;
                npy::expect_finite(&array, name, ErrorCode::NoObjectInvalid)?;
                let mut v = array.data;
                l2_normalize_rows(&mut v, clip.embed_dim);
                // All zeros, or a norm past float32's range, leaves no direction to compare with.
                if v.iter().all(|&x| x == 0.0) {
                    bail!(
                        NoObjectInvalid,
                        "{name} has no direction (all zeros, or a norm past float32's range)"
                    );
                }
                Some(v)
            }
        };
        let session = SessionOptions {
            provider: options.provider,
            threads: options.threads,
        };
        let [(image_file, image_field), (text_file, text_field)] =
            manifest.graphs.encoders(options.precision)?;
        let text =
            crate::text_encoder::TextEncoder::load(&file(text_file, &text_field)?, clip, session)?;
        let image = ImageEncoder::load(
            &file(image_file, &image_field)?,
            clip,
            manifest.pixel_mean,
            manifest.pixel_std,
            session,
        )?;
        let generator = match &manifest.generator {
            None => None,
            Some(spec) => Some(MaskGenerator::load(
                &file(&spec.file, "generator.file")?,
                spec.clone(),
                clip.embed_dim,
                session,
            )?),
        };
        if generator.is_some() && no_object.is_none() {
            bail!(
                ManifestInvalid,
                "a model with a generator needs noObjectEmbedding (its classes are C + no-object)"
            );
        }
        // On a CPU an encoder's cost per crop hardly depends on the batch: no batching unless asked.
        let batcher = options
            .batch
            .filter(|o| o.on_cpu || image.graph.provider.name != "cpu")
            .map(|o| {
                Batcher::new(
                    o,
                    3 * clip.image_size * clip.image_size,
                    clip.patches(),
                    clip.embed_dim,
                )
            });
        Ok(Self {
            manifest,
            dir: dir.to_path_buf(),
            precision: options.precision,
            tokenizer,
            text,
            image,
            generator,
            prompts,
            no_object,
            class_cache: Mutex::new(ClassEmbeddingCache::new(CLASS_CACHE_CAPACITY)),
            crop_buffers: Mutex::new(Vec::new()),
            batcher,
        })
    }

    pub fn stats(&self) -> ModelStats {
        let cache = crate::lock(&self.class_cache);
        ModelStats {
            text_encoder_runs: self.text.runs(),
            class_cache_hits: cache.hits,
            class_cache_misses: cache.misses,
            crop_batches: self.batcher.as_ref().map_or(0, Batcher::batches),
        }
    }

    pub fn provider(&self) -> &ProviderChoice {
        &self.image.graph.provider
    }

    pub fn prompt_depth(&self) -> usize {
        self.prompts.depth
    }

    pub fn has_generator(&self) -> bool {
        self.generator.is_some()
    }

    /// The generator's mask proposals for `rgb` (`[h, w, 3]` bytes at the processing size).
    pub fn propose(&self, rgb: &[u8], size: (usize, usize)) -> Result<Proposals> {
        match &self.generator {
            Some(generator) => generator.propose(rgb, size),
            None => bail!(
                InvalidArgument,
                "this model has no mask generator (manifest generator is absent): pass masks"
            ),
        }
    }

    pub fn has_no_object(&self) -> bool {
        self.no_object.is_some()
    }

    /// A crop output to fill (a kept one when there is one).
    pub(crate) fn crop_buffer(&self) -> MaskCrops {
        crate::lock(&self.crop_buffers).pop().unwrap_or_default()
    }

    /// Keeps `crops` for a later call.
    pub(crate) fn return_crop_buffer(&self, crops: MaskCrops) {
        crate::lock(&self.crop_buffers).push(crops);
    }

    /// Cross-request batching's settings (`None`: off).
    pub fn batch_options(&self) -> Option<BatchOptions> {
        self.batcher.as_ref().map(Batcher::options)
    }

    /// Taken when a `segment()` call starts: batches wait for its crops (up to their `max_wait`).
    pub(crate) fn crop_ticket(&self) -> Option<Ticket<'_>> {
        self.batcher.as_ref().map(Batcher::ticket)
    }

    /// The mask-prompted, normalized features of `crops`' valid crops, batched with other calls'
    /// crops when batching is on. `crops` keeps its pixels.
    pub(crate) fn encode_crops(
        &self,
        ticket: Option<Ticket>,
        crops: &mut MaskCrops,
    ) -> Result<Features> {
        let Some(batcher) = &self.batcher else {
            return self.encode_image(
                Pixels::Normalized(&crops.pixels),
                Some(&crops.masks),
                true,
                true,
            );
        };
        let clip = &self.manifest.clip;
        let count = crops.valid_count();
        let keep = patch_keep_mask(&crops.masks, clip.image_size, clip.patch_size)?;
        let rows = Rows {
            pixels: std::mem::take(&mut crops.pixels),
            keep,
        };
        let ticket = ticket.unwrap_or_else(|| batcher.ticket());
        let run = |pixels: &[f32], keep: &[f32], batch: usize| {
            self.image.run(pixels, keep, batch, &self.prompts)
        };
        let out = batcher.encode(ticket, rows, count, &run)?;
        crops.pixels = out.rows.pixels;
        let mut data = out.features;
        l2_normalize_rows(&mut data, clip.embed_dim);
        Ok(Features {
            data,
            rows: count,
            dim: clip.embed_dim,
            session_ms: out.session_ms,
        })
    }

    /// `[texts, context_length]` ids.
    pub fn tokenize(&self, texts: &[impl AsRef<str>], overflow: Overflow) -> Result<Vec<i32>> {
        self.tokenizer.tokenize(texts, overflow)
    }

    /// Text features; each text-encoder run is cut to its longest text when the graph allows it.
    pub fn encode_text(
        &self,
        texts: &[impl AsRef<str>],
        overflow: Overflow,
        normalize: bool,
    ) -> Result<Features> {
        self.encode_text_cut(texts, overflow, normalize, self.text.dynamic_length())
    }

    /// `encode_text` at the full context, as CLIP itself runs (for parity checks and the
    /// text-length benchmark: the features are the same).
    pub fn encode_text_full_context(
        &self,
        texts: &[impl AsRef<str>],
        overflow: Overflow,
        normalize: bool,
    ) -> Result<Features> {
        self.encode_text_cut(texts, overflow, normalize, false)
    }

    /// Whether the text encoder runs each batch at its longest text (a dynamic token axis).
    pub fn text_dynamic_length(&self) -> bool {
        self.text.dynamic_length()
    }

    fn encode_text_cut(
        &self,
        texts: &[impl AsRef<str>],
        overflow: Overflow,
        normalize: bool,
        cut: bool,
    ) -> Result<Features> {
        let ids = self.tokenize(texts, overflow)?;
        let mut features = self.text.encode_ids_cut(&ids, cut)?;
        if normalize {
            l2_normalize_rows(&mut features.data, features.dim);
        }
        Ok(features)
    }

    /// `masks`: `[batch, size, size]` binary (nonzero = foreground) or `None` (keep every patch).
    /// `use_prompts = false` runs plain CLIP even when the model has prompts.
    pub fn encode_image(
        &self,
        pixels: Pixels,
        masks: Option<&[u8]>,
        use_prompts: bool,
        normalize: bool,
    ) -> Result<Features> {
        let disabled;
        let prompts = if use_prompts {
            &self.prompts
        } else {
            disabled = MaskPromptSet::none(&self.manifest.clip);
            &disabled
        };
        let mut features = self.image.encode(pixels, masks, prompts)?;
        if normalize {
            l2_normalize_rows(&mut features.data, features.dim);
        }
        Ok(features)
    }

    /// What a class matrix depends on besides its key (one text-encoder run, of the probe
    /// text): a saved matrix is only loaded by a model with the same identity.
    pub fn class_identity(&self) -> Result<crate::class_file::Identity> {
        let m = &self.manifest;
        let probe = self.encode_text(&[crate::class_file::PROBE_TEXT], Overflow::Truncate, true)?;
        Ok(crate::class_file::Identity {
            precision: crate::Named::name(self.precision).to_owned(),
            tokenizer: (m.tokenizer.vocab.clone(), m.tokenizer.merges),
            context_length: m.clip.context_length,
            embed_dim: m.clip.embed_dim,
            probe: probe.data,
        })
    }

    /// Saves the class matrix of `classes` (computed, or from the cache) to `path`.
    pub fn save_class_embeddings(
        &self,
        path: &Path,
        classes: &[impl AsRef<str>],
        templates: Option<&[String]>,
        overflow: Overflow,
    ) -> Result<()> {
        let matrix = self.class_embeddings(classes, templates, overflow, false)?;
        let key = class_key(
            classes,
            templates.unwrap_or(&self.manifest.templates),
            overflow,
        );
        crate::class_file::save(
            path,
            &self.class_identity()?,
            &key,
            matrix.dim,
            &matrix.data,
        )
    }

    /// Loads a saved class matrix into the cache (a `segment()` or `class_embeddings` call with
    /// the same classes, templates and overflow policy then runs no text encoder); returns its
    /// classes and templates.
    pub fn load_class_embeddings(&self, path: &Path) -> Result<crate::class_file::Vocabulary> {
        let (key, matrix) = crate::class_file::load(path, &self.class_identity()?)?;
        let names = crate::class_file::Vocabulary {
            classes: key.0.clone(),
            templates: key.1.clone(),
        };
        crate::lock(&self.class_cache).insert(key, Arc::new(matrix));
        Ok(names)
    }

    /// OVSeg's class matrix: per class, the template-ensembled text embedding (`[classes, dim]`,
    /// unit rows); with `include_no_object`, the normalized no-object embedding as a last row.
    pub fn class_embeddings(
        &self,
        classes: &[impl AsRef<str>],
        templates: Option<&[String]>,
        overflow: Overflow,
        include_no_object: bool,
    ) -> Result<Features> {
        if classes.is_empty() {
            bail!(EmptyInput, "expected at least one class name");
        }
        let templates = templates.unwrap_or(&self.manifest.templates);
        if templates.is_empty() {
            bail!(EmptyInput, "expected at least one template");
        }
        if let Some(t) = templates.iter().find(|t| !t.contains("{}")) {
            bail!(
                InvalidArgument,
                "template {t:?} has no {{}} placeholder for the class name"
            );
        }
        let key = class_key(classes, templates, overflow);
        let cached = crate::lock(&self.class_cache).get(&key);
        let mut text_session_ms = 0.0;
        let matrix = match cached {
            Some(matrix) => matrix,
            None => {
                let raw = self.encode_text(&fill_templates(classes, templates), overflow, false)?;
                text_session_ms = raw.session_ms;
                let matrix = Arc::new(ensemble_templates(raw.data, templates.len(), raw.dim));
                let mut cache = crate::lock(&self.class_cache);
                cache.insert(key, Arc::clone(&matrix));
                matrix
            }
        };
        let dim = self.manifest.clip.embed_dim;
        let mut data = matrix.as_ref().clone();
        let mut rows = classes.len();
        if include_no_object {
            let row = self.no_object.as_ref().ok_or_else(|| {
                Error::new(
                    ErrorCode::InvalidArgument,
                    "this model has no no-object embedding (manifest noObjectEmbedding is null)",
                )
            })?;
            data.extend_from_slice(row);
            rows += 1;
        }
        Ok(Features {
            data,
            rows,
            dim,
            session_ms: text_session_ms,
        })
    }
}
