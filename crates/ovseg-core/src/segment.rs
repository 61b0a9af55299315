//! OVSeg's two-stage inference (docs/ovseg.md, section 1 and the demo path):
//! resize the image (short side 640), propose masks (the model's generator, the caller's masks, or
//! both), crop and encode each mask with the mask-prompted CLIP, classify (generator x CLIP
//! ensemble; caller masks by CLIP alone), sum the probability-weighted masks, resize the scores to
//! the original size, argmax.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::aggregate::{argmax_labels, best_rows_per_class, mark_unlabeled, semantic_scores};
use crate::cancel;
use crate::classify::{clip_probabilities, ensemble, generator_probabilities};
use crate::error::{bail, Result};
use crate::manifest::Defaults;
use crate::mask_crop::{crop_masks_into, CropOptions, MaskCrops};
use crate::model::Model;
use crate::resample::{bilinear_resize, resize_rgb, shortest_edge_size};
use crate::sam::{AmgOptions, SamModel};
use crate::tokenizer::Overflow;

/// sharp's default `limitInputPixels` (0x3FFF * 0x3FFF).
pub const DEFAULT_MAX_PIXELS: usize = 0x3FFF * 0x3FFF;

/// The class the demo mode appends to a single-class vocabulary (as OVSeg's demo does).
pub const OTHERS: &str = "others";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// OVSeg's evaluation path: every pixel gets one of the classes.
    #[default]
    Semantic,
    /// OVSeg's demo path: binarized masks, only the best mask per class, pixels no selected mask
    /// covers are `UNLABELED`; a single class gets "others" appended.
    Demo,
}

impl crate::Named for Mode {
    const ALL: &'static [Self] = &[Mode::Semantic, Mode::Demo];

    fn name(self) -> &'static str {
        match self {
            Mode::Semantic => "semantic",
            Mode::Demo => "demo",
        }
    }
}

impl Mode {
    /// OVSeg's mask threshold: 0.4 (evaluation config), 0.35 (demo config).
    pub fn default_threshold(self) -> f32 {
        match self {
            Mode::Semantic => 0.4,
            Mode::Demo => 0.35,
        }
    }

    /// OVSeg's ensemble weight: 0.7 (its ADE20K setting), 0 = CLIP only (its public demo).
    pub fn default_lambda(self) -> f32 {
        match self {
            Mode::Semantic => 0.7,
            Mode::Demo => 0.0,
        }
    }
}

/// The rule of a `threshold`, a call's or a manifest's.
pub fn valid_threshold(threshold: f32) -> bool {
    threshold.is_finite()
}

/// The rule of a `lambda`, a call's or a manifest's.
pub fn valid_lambda(lambda: f32) -> bool {
    (0.0..=1.0).contains(&lambda)
}

/// `mode`, `threshold` and `lambda` left `None` take the model's defaults (see `resolve`).
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    pub mode: Option<Mode>,
    /// A mask pixel is foreground for cropping when its value is strictly greater.
    pub threshold: Option<f32>,
    /// Ensemble weight of CLIP against the generator in [0, 1].
    pub lambda: Option<f32>,
    /// Run the model's mask generator (when it has one).
    pub generator: bool,
    /// Templates for the class embeddings; `None` = the manifest's.
    pub templates: Option<Vec<String>>,
    pub overflow: Overflow,
    /// Images with more pixels are refused.
    pub max_pixels: usize,
    /// Also return the per-class score maps `[classes, height, width]`.
    pub scores: bool,
    /// Also return the CLIP crops `[valid masks, 3, size, size]` (normalized).
    pub crops: bool,
    /// SAM's automatic masks as proposals too.
    pub sam: Option<SamProposals>,
}

/// SAM's automatic masks as a proposal source: classified by CLIP alone, as the caller's masks are.
#[derive(Clone)]
pub struct SamProposals {
    pub model: Arc<SamModel>,
    pub options: AmgOptions,
    /// At most this many masks, the highest predicted IoU first, go on to CLIP.
    pub max_masks: usize,
    /// Also return those masks (`Segmentation::sam_masks`).
    pub return_masks: bool,
}

/// `SamProposals::max_masks` when a call leaves it out.
pub const DEFAULT_SAM_MAX_MASKS: usize = 100;

impl std::fmt::Debug for SamProposals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamProposals")
            .field("model", &self.model.manifest.name)
            .field("options", &self.options)
            .field("max_masks", &self.max_masks)
            .field("return_masks", &self.return_masks)
            .finish()
    }
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            mode: None,
            threshold: None,
            lambda: None,
            generator: true,
            templates: None,
            overflow: Overflow::Error,
            max_pixels: DEFAULT_MAX_PIXELS,
            scores: false,
            crops: false,
            sam: None,
        }
    }
}

/// The mode, threshold and lambda a call runs with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    pub threshold: f32,
    pub lambda: f32,
}

/// Each of `options`' settings, else the model's `defaults` for the resulting mode (its manifest;
/// those fall back to the built-in ones).
pub fn resolve(options: &SegmentOptions, defaults: &Defaults) -> Settings {
    let mode = options.mode.unwrap_or(defaults.mode());
    Settings {
        mode,
        threshold: options.threshold.unwrap_or(defaults.threshold(mode)),
        lambda: options.lambda.unwrap_or(defaults.lambda(mode)),
    }
}

/// Caller masks at the original image size, `[masks, height, width]`.
#[derive(Debug, Clone, Copy)]
pub enum MaskInput<'a> {
    /// Probabilities / soft values.
    Soft(&'a [f32]),
    /// Nonzero = foreground.
    Binary(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSource {
    Generator,
    Caller,
    Sam,
}

impl crate::Named for MaskSource {
    const ALL: &'static [Self] = &[MaskSource::Generator, MaskSource::Caller, MaskSource::Sam];

    fn name(self) -> &'static str {
        match self {
            MaskSource::Generator => "generator",
            MaskSource::Caller => "caller",
            MaskSource::Sam => "sam",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub source: MaskSource,
    /// Index of the mask within its source (generator query or caller mask).
    pub index: usize,
    /// Whether any pixel passed the threshold (only valid masks are cropped for CLIP).
    pub valid: bool,
    /// Whether the mask contributes to the label map.
    pub used: bool,
    /// The best class of the mask's final probabilities, and that probability (used masks only).
    pub class: Option<u16>,
    pub score: f32,
    /// `[x0, y0, x1, y1]` (exclusive) of the foreground, measured at the processing size and
    /// scaled to the original size.
    pub bbox: Option<[usize; 4]>,
    /// Foreground pixels at the processing size, scaled to the original size (rounded).
    pub area: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    pub resize_ms: f64,
    pub generator_ms: f64,
    /// SAM's automatic mask generation (its encoder and decoder runs included).
    pub sam_ms: f64,
    pub crop_ms: f64,
    pub text_ms: f64,
    pub image_encoder_ms: f64,
    pub aggregate_ms: f64,
    /// Time inside ONNX Runtime's session runs (generator, SAM, text and image encoders).
    pub session_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    pub width: usize,
    pub height: usize,
    /// The classes the labels index (the caller's, plus "others" in demo mode with one class).
    pub classes: Vec<String>,
    /// `[height * width]` class index per pixel (`UNLABELED` in demo mode where no mask is
    /// selected; all 0 when no mask is used at all, see `segments`).
    pub labels: Vec<u16>,
    /// Pixels per class.
    pub class_pixels: Vec<u64>,
    /// Generator masks first, then the caller's.
    pub segments: Vec<Segment>,
    /// `[used masks, classes]` final probabilities, in `segments` order of the used masks.
    pub probabilities: Vec<f32>,
    /// `[classes, height, width]` when asked for.
    pub scores: Option<Vec<f32>>,
    /// `[valid masks, 3, size, size]` CLIP crops when asked for.
    pub crops: Option<Vec<f32>>,
    /// `[SAM masks, height, width]` (1 inside) of the SAM segments, in their order, when asked for.
    pub sam_masks: Option<Vec<u8>>,
    /// The processing size `(height, width)` the image was resized to.
    pub processing_size: (usize, usize),
    pub timings: Timings,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Class names must be non-empty, distinct and fit a 16-bit label map (`UNLABELED` is reserved).
fn check_classes(classes: &[impl AsRef<str>]) -> Result<()> {
    if classes.is_empty() {
        bail!(EmptyInput, "expected at least one class name");
    }
    if classes.len() > usize::from(u16::MAX) {
        bail!(
            InvalidArgument,
            "{} classes do not fit a 16-bit label map (at most 65535)",
            classes.len()
        );
    }
    let mut seen = HashSet::new();
    for (i, c) in classes.iter().enumerate() {
        let c = c.as_ref();
        if c.trim().is_empty() {
            bail!(InvalidArgument, "class name {i} is empty");
        }
        if !seen.insert(c) {
            bail!(InvalidArgument, "class name {c:?} appears twice");
        }
    }
    Ok(())
}

/// Caller masks as soft `[masks, plane]` values (binary ones converted), checked.
pub fn caller_masks<'a>(
    masks: MaskInput<'a>,
    (height, width): (usize, usize),
) -> Result<Cow<'a, [f32]>> {
    let plane = height * width;
    let soft: Cow<[f32]> = match masks {
        MaskInput::Soft(m) => Cow::Borrowed(m),
        MaskInput::Binary(m) => {
            Cow::Owned(m.iter().map(|&v| f32::from(u8::from(v != 0))).collect())
        }
    };
    if soft.is_empty() || !soft.len().is_multiple_of(plane) {
        bail!(
            InvalidMask,
            "mask data of {} values is not a whole number of {width}x{height} masks",
            soft.len()
        );
    }
    if let Some(i) = soft.iter().position(|v| !v.is_finite()) {
        bail!(
            InvalidMask,
            "mask {} has a non-finite value ({}) at pixel {}",
            i / plane,
            soft[i],
            i % plane
        );
    }
    Ok(soft)
}

/// A call's inputs, checked before any work.
struct Request<'a> {
    /// The caller's classes, plus "others" for a single class in demo mode.
    classes: Vec<String>,
    user_classes: usize,
    settings: Settings,
    /// The caller's masks at the original size, `[masks, height * width]`.
    caller: Option<Cow<'a, [f32]>>,
    /// How many masks `caller` holds.
    callers: usize,
    use_generator: bool,
}

/// Every limit and argument, before anything is computed.
fn check_request<'a>(
    model: &Model,
    rgb: &[u8],
    (height, width): (usize, usize),
    masks: Option<MaskInput<'a>>,
    classes: &[impl AsRef<str>],
    options: &SegmentOptions,
) -> Result<Request<'a>> {
    check_classes(classes)?;
    let settings = resolve(options, &model.manifest.segment_defaults());
    let Settings {
        mode,
        threshold,
        lambda,
    } = settings;
    if !valid_threshold(threshold) {
        bail!(
            InvalidArgument,
            "Expected a finite number for `threshold` but received {threshold}"
        );
    }
    if !valid_lambda(lambda) {
        bail!(
            InvalidArgument,
            "Expected a number in [0, 1] for `lambda` but received {lambda}"
        );
    }
    let plane = height * width;
    if plane == 0 || plane > options.max_pixels {
        bail!(
            InvalidImage,
            "image of {width}x{height} pixels is empty or over the limit of {} pixels",
            options.max_pixels
        );
    }
    if rgb.len() != plane * 3 {
        bail!(
            InvalidImage,
            "expected {width}x{height}x3 RGB bytes ({} values), got {}",
            plane * 3,
            rgb.len()
        );
    }
    let caller = masks
        .map(|m| caller_masks(m, (height, width)))
        .transpose()?;
    let use_generator = options.generator && model.has_generator();
    if !use_generator && caller.is_none() && options.sam.is_none() {
        bail!(
            InvalidArgument,
            "no mask source: {}, no masks were given and SAM is not used",
            if model.has_generator() {
                "the generator is switched off"
            } else {
                "this model has no mask generator"
            }
        );
    }
    let mut classes: Vec<String> = classes.iter().map(|c| c.as_ref().to_owned()).collect();
    let user_classes = classes.len();
    if mode == Mode::Demo && user_classes == 1 && classes[0] != OTHERS {
        classes.push(OTHERS.to_owned());
    }
    let callers = caller.as_ref().map_or(0, |c| c.len() / plane);
    Ok(Request {
        classes,
        user_classes,
        settings,
        caller,
        callers,
        use_generator,
    })
}

/// Every proposal at the processing size: the generator's queries first, then the caller's masks,
/// then SAM's.
struct Proposed {
    /// `[queries, height, width]` soft masks.
    masks: Vec<f32>,
    /// How many of them are the generator's.
    generated: usize,
    /// How many are the caller's.
    callers: usize,
    /// `[generated, dim]` the generator's query embeddings (with the generator only).
    embeddings: Option<Vec<f32>>,
}

/// Final class probabilities of the masks that take part in the label map.
#[derive(Debug, PartialEq)]
struct Classified {
    /// Query indices, ascending.
    used: Vec<usize>,
    /// `[used.len(), classes]`.
    probabilities: Vec<f32>,
}

/// Generator queries through OVSeg's ensemble with their CLIP rows; caller masks by CLIP alone
/// (they have no generator score); invalid masks (nothing over the threshold) are left out.
/// `p_clip`: `[valid masks, classes]` in query order.
fn classify_masks(
    p_gen: Option<&[f32]>,
    p_clip: &[f32],
    valid: &[bool],
    generated: usize,
    classes: usize,
    lambda: f32,
) -> Result<Classified> {
    let generator_valid = valid[..generated].iter().filter(|&&v| v).count();
    let (mut used, mut probabilities) = match p_gen {
        Some(p_gen) => {
            let e = ensemble(
                p_gen,
                &p_clip[..generator_valid * classes],
                &valid[..generated],
                classes,
                lambda,
            )?;
            (e.kept, e.probabilities)
        }
        None => (Vec::new(), Vec::new()),
    };
    let mut caller_rows = p_clip[generator_valid * classes..].chunks_exact(classes);
    for q in (generated..valid.len()).filter(|&q| valid[q]) {
        used.push(q);
        probabilities.extend_from_slice(caller_rows.next().expect("one CLIP row per valid mask"));
    }
    Ok(Classified {
        used,
        probabilities,
    })
}

/// OVSeg's demo selection: the best mask per caller class, binarized at the threshold
/// (`[selected, plane]`); `classified` narrows to those masks. Semantic mode uses every mask as is.
fn select_for_demo(
    classified: &mut Classified,
    masks: &[f32],
    plane: usize,
    classes: usize,
    user_classes: usize,
    threshold: f32,
) -> Vec<f32> {
    let rows = best_rows_per_class(&classified.probabilities, classes, user_classes);
    let binarized = rows
        .iter()
        .flat_map(|&r| {
            masks[classified.used[r] * plane..][..plane]
                .iter()
                .map(|&v| f32::from(u8::from(v > threshold)))
        })
        .collect();
    classified.probabilities = rows
        .iter()
        .flat_map(|&r| {
            classified.probabilities[r * classes..][..classes]
                .iter()
                .copied()
        })
        .collect();
    classified.used = rows.iter().map(|&r| classified.used[r]).collect();
    binarized
}

/// Score maps at the original size `[classes, height * width]`, the label per pixel and the
/// pixels per class: `S[c] = sum p[q, c] * mask[q]` at the processing size, bilinear to the
/// original size, argmax (demo: `UNLABELED` where no selected mask covers a pixel).
fn label_map(
    mode: Mode,
    classified: &Classified,
    masks: &[&[f32]],
    classes: usize,
    processing: (usize, usize),
    size: (usize, usize),
) -> Result<(Vec<f32>, Vec<u16>, Vec<u64>)> {
    let plane = size.0 * size.1;
    let scores = if classified.used.is_empty() {
        vec![0f32; classes * plane]
    } else {
        let rplane = processing.0 * processing.1;
        let small = semantic_scores(&classified.probabilities, masks, classes, rplane)?;
        cancel::check()?;
        bilinear_resize(&small, classes, processing, size)
    };
    cancel::check()?;
    let mut labels = argmax_labels(&scores, classes, plane)?;
    if mode == Mode::Demo {
        mark_unlabeled(&mut labels, &scores, classes);
    }
    let mut class_pixels = vec![0u64; classes];
    labels
        .iter()
        .filter(|&&l| usize::from(l) < classes)
        .for_each(|&l| class_pixels[usize::from(l)] += 1);
    Ok((scores, labels, class_pixels))
}

/// One `Segment` per proposal: its source, validity, best class and box/area at the original size.
fn describe(
    classified: &Classified,
    crops: &MaskCrops,
    (generated, callers): (usize, usize),
    classes: usize,
    processing: (usize, usize),
    (height, width): (usize, usize),
) -> Vec<Segment> {
    let scale = (
        width as f64 / processing.1 as f64,
        height as f64 / processing.0 as f64,
    );
    let mut used_rows = classified
        .used
        .iter()
        .zip(classified.probabilities.chunks_exact(classes))
        .peekable();
    (0..crops.boxes.len())
        .map(|q| {
            let row = used_rows.next_if(|&(&u, _)| u == q).map(|(_, row)| row);
            let best = row.and_then(|row| {
                row.iter().enumerate().fold(
                    None,
                    |best: Option<(usize, f32)>, (c, &p)| match best {
                        Some((_, bp)) if bp >= p => best,
                        _ => Some((c, p)),
                    },
                )
            });
            let (source, index) = if q < generated {
                (MaskSource::Generator, q)
            } else if q < generated + callers {
                (MaskSource::Caller, q - generated)
            } else {
                (MaskSource::Sam, q - generated - callers)
            };
            Segment {
                source,
                index,
                valid: crops.boxes[q].is_some(),
                used: row.is_some(),
                class: best.map(|(c, _)| c as u16),
                score: best.map_or(0.0, |(_, p)| p),
                bbox: crops.boxes[q].map(|[x0, y0, x1, y1]| {
                    [
                        (x0 as f64 * scale.0).floor() as usize,
                        (y0 as f64 * scale.1).floor() as usize,
                        ((x1 as f64 * scale.0).ceil() as usize).min(width),
                        ((y1 as f64 * scale.1).ceil() as usize).min(height),
                    ]
                }),
                area: (crops.areas[q] as f64 * scale.0 * scale.1).round() as usize,
            }
        })
        .collect()
}

/// `f`'s result, its time added to `slot` in milliseconds; then a cancellation check.
fn timed<T>(slot: &mut f64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f()?;
    *slot += ms(start);
    cancel::check()?;
    Ok(out)
}

impl Model {
    /// Segments `rgb` (`[height, width, 3]` bytes) into `classes`, with the model's generator
    /// (unless `options.generator` is false), the caller's `masks`, or both; the stages of
    /// docs/ovseg.md, section 1.
    pub fn segment(
        &self,
        rgb: &[u8],
        size: (usize, usize),
        masks: Option<MaskInput>,
        classes: &[impl AsRef<str>],
        options: &SegmentOptions,
    ) -> Result<Segmentation> {
        let start = Instant::now();
        let request = check_request(self, rgb, size, masks, classes, options)?;
        // From here on a batch of other calls' crops may wait for this call's.
        let ticket = self.crop_ticket();
        let n = request.classes.len();
        let mut t = Timings::default();

        let processing = self.manifest.processing_size();
        let rsize = shortest_edge_size(size.0, size.1, processing.short_side, processing.max_size);
        let rplane = rsize.0 * rsize.1;
        let (resized, caller) = timed(&mut t.resize_ms, || {
            let caller = request
                .caller
                .as_ref()
                .map(|soft| bilinear_resize(soft, soft.len() / (size.0 * size.1), size, rsize));
            Ok((resize_rgb(rgb, size, rsize)?, caller))
        })?;

        let generator = if request.use_generator {
            Some(timed(&mut t.generator_ms, || {
                self.propose(&resized, rsize)
            })?)
        } else {
            None
        };
        t.session_ms += generator.as_ref().map_or(0.0, |g| g.session_ms);
        let proposed = match (generator, caller) {
            (Some(mut g), caller) => {
                g.masks
                    .extend_from_slice(caller.as_deref().unwrap_or_default());
                Proposed {
                    masks: g.masks,
                    generated: g.queries,
                    callers: request.callers,
                    embeddings: Some(g.embeddings),
                }
            }
            (None, caller) => Proposed {
                masks: caller.unwrap_or_default(),
                generated: 0,
                callers: request.callers,
                embeddings: None,
            },
        };
        let mut proposed = proposed;
        let mut sam_masks = None;
        if let Some(sam) = &options.sam {
            let planes = timed(&mut t.sam_ms, || {
                let (mut masks, session_ms) = sam.model.generate(rgb, size, &sam.options)?;
                t.session_ms += session_ms;
                masks.truncate(sam.max_masks);
                // To the processing size as the caller's masks go (bilinear from 0/1).
                let mut planes = Vec::with_capacity(masks.len() * rplane);
                for m in &masks {
                    cancel::check()?;
                    let soft: Vec<f32> = m.mask.iter().map(|&v| f32::from(v)).collect();
                    planes.extend(bilinear_resize(&soft, 1, size, rsize));
                }
                if sam.return_masks {
                    sam_masks = Some(masks.into_iter().flat_map(|m| m.mask).collect());
                }
                Ok(planes)
            })?;
            proposed.masks.extend(planes);
        }

        let clip = &self.manifest.clip;
        let crop_options = CropOptions {
            threshold: request.settings.threshold,
            size: clip.image_size,
            mean: self.manifest.pixel_mean,
            std: self.manifest.pixel_std,
        };
        let mut crops = timed(&mut t.crop_ms, || {
            let mut crops = self.crop_buffer();
            crop_masks_into(
                &resized,
                rsize.0,
                rsize.1,
                &proposed.masks,
                &crop_options,
                &mut crops,
            )?;
            Ok(crops)
        })?;
        let valid: Vec<bool> = crops.boxes.iter().map(Option::is_some).collect();

        let class_matrix = timed(&mut t.text_ms, || {
            self.class_embeddings(
                &request.classes,
                options.templates.as_deref(),
                options.overflow,
                self.has_no_object(),
            )
        })?;
        t.session_ms += class_matrix.session_ms;

        let p_clip = timed(&mut t.image_encoder_ms, || {
            if crops.valid_count() == 0 {
                return Ok(Vec::new());
            }
            let features = self.encode_crops(ticket, &mut crops)?;
            t.session_ms += features.session_ms;
            Ok(clip_probabilities(
                &features.data,
                &class_matrix.data,
                n,
                class_matrix.dim,
            ))
        })?;

        let aggregate = Instant::now();
        let p_gen = proposed
            .embeddings
            .as_deref()
            .map(|e| generator_probabilities(e, &class_matrix.data, class_matrix.dim))
            .transpose()?;
        let mut classified = classify_masks(
            p_gen.as_deref(),
            &p_clip,
            &valid,
            proposed.generated,
            n,
            request.settings.lambda,
        )?;
        let mode = request.settings.mode;
        let binarized = (mode == Mode::Demo).then(|| {
            select_for_demo(
                &mut classified,
                &proposed.masks,
                rplane,
                n,
                request.user_classes,
                request.settings.threshold,
            )
        });
        let masks: Vec<&[f32]> = match &binarized {
            Some(b) => b.chunks_exact(rplane).collect(),
            None => classified
                .used
                .iter()
                .map(|&q| &proposed.masks[q * rplane..][..rplane])
                .collect(),
        };
        let (scores, labels, class_pixels) = label_map(mode, &classified, &masks, n, rsize, size)?;
        let segments = describe(
            &classified,
            &crops,
            (proposed.generated, proposed.callers),
            n,
            rsize,
            size,
        );
        t.aggregate_ms = ms(aggregate);
        t.total_ms = ms(start);
        let crop_pixels = if options.crops {
            Some(crops.pixels)
        } else {
            self.return_crop_buffer(crops);
            None
        };
        Ok(Segmentation {
            width: size.1,
            height: size.0,
            classes: request.classes,
            labels,
            class_pixels,
            segments,
            probabilities: classified.probabilities,
            scores: options.scores.then_some(scores),
            crops: crop_pixels,
            sam_masks,
            processing_size: rsize,
            timings: t,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::manifest::ModeDefaults;

    #[test]
    fn class_lists_are_checked() {
        assert_eq!(
            check_classes(&[] as &[&str]).unwrap_err().code,
            ErrorCode::EmptyInput
        );
        assert_eq!(
            check_classes(&["a", "a"]).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            check_classes(&["a", " "]).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let many: Vec<String> = (0..65536).map(|i| i.to_string()).collect();
        assert_eq!(
            check_classes(&many).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert!(check_classes(&["building, edifice", "sky"]).is_ok());
    }

    #[test]
    fn a_call_s_settings_override_the_model_s_which_override_the_built_in_ones() {
        let model = Defaults {
            mode: Some(Mode::Demo),
            semantic: Some(ModeDefaults {
                threshold: Some(0.5),
                lambda: None,
            }),
            demo: Some(ModeDefaults {
                threshold: None,
                lambda: Some(0.2),
            }),
        };
        let call = |mode, threshold, lambda| SegmentOptions {
            mode,
            threshold,
            lambda,
            ..Default::default()
        };
        let settings = |mode, threshold, lambda| Settings {
            mode,
            threshold,
            lambda,
        };
        use Mode::{Demo, Semantic};
        for (options, defaults, want) in [
            // No manifest defaults: the built-in ones of the call's mode, semantic without one.
            (
                call(None, None, None),
                Defaults::default(),
                settings(Semantic, 0.4, 0.7),
            ),
            (
                call(Some(Demo), None, None),
                Defaults::default(),
                settings(Demo, 0.35, 0.0),
            ),
            (
                call(Some(Demo), Some(0.1), Some(0.9)),
                Defaults::default(),
                settings(Demo, 0.1, 0.9),
            ),
            // The manifest's mode when the call has none; its values for that mode, built-in ones
            // where it has none.
            (call(None, None, None), model, settings(Demo, 0.35, 0.2)),
            (
                call(Some(Semantic), None, None),
                model,
                settings(Semantic, 0.5, 0.7),
            ),
            (
                call(Some(Demo), None, None),
                model,
                settings(Demo, 0.35, 0.2),
            ),
            // The call's values over the manifest's, each on its own.
            (call(None, Some(0.1), None), model, settings(Demo, 0.1, 0.2)),
            (
                call(None, None, Some(1.0)),
                model,
                settings(Demo, 0.35, 1.0),
            ),
            (
                call(Some(Semantic), None, Some(0.0)),
                model,
                settings(Semantic, 0.5, 0.0),
            ),
            (
                call(Some(Semantic), Some(0.3), Some(0.6)),
                model,
                settings(Semantic, 0.3, 0.6),
            ),
        ] {
            assert_eq!(
                resolve(&options, &defaults),
                want,
                "{options:?} over {defaults:?}"
            );
        }
    }

    #[test]
    fn caller_masks_must_be_finite() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = caller_masks(MaskInput::Soft(&[0.0, 1.0, bad, 0.5]), (2, 2)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidMask);
            assert!(err.message.contains("non-finite"), "{}", err.message);
            assert!(err.message.contains(&bad.to_string()), "{}", err.message);
        }
        let soft = caller_masks(MaskInput::Binary(&[0, 7, 0, 1]), (2, 2)).unwrap();
        assert_eq!(&soft[..], &[0.0, 1.0, 0.0, 1.0]);
        let err = caller_masks(MaskInput::Soft(&[0.0; 3]), (2, 2)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMask);
    }

    #[test]
    fn caller_masks_are_classified_by_clip_alone_and_invalid_ones_left_out() {
        // No generator; 3 caller masks, the middle one invalid; 2 classes.
        let p_clip = [0.9, 0.1, 0.2, 0.8];
        let c = classify_masks(None, &p_clip, &[true, false, true], 0, 2, 0.7).unwrap();
        assert_eq!(c.used, vec![0, 2]);
        assert_eq!(c.probabilities, p_clip.to_vec());
    }

    #[test]
    fn demo_keeps_the_best_mask_per_class_binarized() {
        let mut c = Classified {
            used: vec![0, 1, 2],
            probabilities: vec![0.6, 0.4, 0.9, 0.1, 0.3, 0.7],
        };
        let masks = [0.2, 0.5, 0.9, 0.1, 0.3, 0.6];
        // Class 0 is best in mask 1, class 1 in mask 2; threshold 0.35.
        let binarized = select_for_demo(&mut c, &masks, 2, 2, 2, 0.35);
        assert_eq!(c.used, vec![1, 2]);
        assert_eq!(c.probabilities, vec![0.9, 0.1, 0.3, 0.7]);
        assert_eq!(binarized, vec![1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn the_label_map_is_the_argmax_of_probability_weighted_masks() {
        let c = Classified {
            used: vec![0, 1],
            probabilities: vec![0.9, 0.1, 0.2, 0.8],
        };
        let masks: [&[f32]; 2] = [&[1.0, 0.0], &[0.0, 1.0]];
        // 1x2 processing size, same original size: no resampling.
        let (scores, labels, pixels) =
            label_map(Mode::Semantic, &c, &masks, 2, (1, 2), (1, 2)).unwrap();
        assert_eq!(scores, vec![0.9, 0.2, 0.1, 0.8]);
        assert_eq!(labels, vec![0, 1]);
        assert_eq!(pixels, vec![1, 1]);
        // Demo: no mask covers the pixels -> UNLABELED.
        let (_, labels, pixels) = label_map(
            Mode::Demo,
            &c,
            &[&[0.0, 0.0], &[0.0, 0.0]],
            2,
            (1, 2),
            (1, 2),
        )
        .unwrap();
        assert_eq!(labels, vec![crate::aggregate::UNLABELED; 2]);
        assert_eq!(pixels, vec![0, 0]);
    }

    #[test]
    fn segments_scale_boxes_to_the_original_size() {
        let crops = MaskCrops {
            boxes: vec![Some([1, 2, 3, 4]), None],
            areas: vec![4, 0],
            ..Default::default()
        };
        let c = Classified {
            used: vec![0],
            probabilities: vec![0.25, 0.75],
        };
        // Processing 10x10 -> original 20x30 (height, width).
        let segments = describe(&c, &crops, (1, 1), 2, (10, 10), (20, 30));
        assert_eq!(segments[0].source, MaskSource::Generator);
        assert_eq!((segments[0].class, segments[0].score), (Some(1), 0.75));
        assert_eq!(segments[0].bbox, Some([3, 4, 9, 8]));
        assert_eq!(segments[0].area, 24);
        assert_eq!(segments[1].source, MaskSource::Caller);
        assert!(!segments[1].valid && !segments[1].used && segments[1].class.is_none());
    }
}
