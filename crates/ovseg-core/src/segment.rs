//! OVSeg's two-stage inference (../shared/docs/ovseg-reference.md, section 1 and the demo path):
//! resize the image (short side 640), propose masks (the model's generator, the caller's masks, or
//! both), crop and encode each mask with the mask-prompted CLIP, classify (generator x CLIP
//! ensemble; caller masks by CLIP alone), sum the probability-weighted masks, resize the scores to
//! the original size, argmax.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Instant;

use crate::aggregate::{
    argmax_labels, best_rows_per_class, bilinear_resize, mark_unlabeled, semantic_scores,
};
use crate::cancel;
use crate::classify::{clip_probabilities, ensemble, generator_probabilities};
use crate::error::{bail, Result};
use crate::image_encoder::Pixels;
use crate::image_resize::{resize_rgb, shortest_edge_size};
use crate::mask_crop::{crop_masks, CropOptions};
use crate::model::Model;
use crate::tokenizer::Overflow;

/// sharp's default `limitInputPixels` (0x3FFF * 0x3FFF).
pub const DEFAULT_MAX_PIXELS: usize = 0x3FFF * 0x3FFF;

/// The class the demo mode appends to a single-class vocabulary (as OVSeg's demo does).
pub const OTHERS: &str = "others";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// OVSeg's evaluation path: every pixel gets one of the classes.
    #[default]
    Semantic,
    /// OVSeg's demo path: binarized masks, only the best mask per class, pixels no selected mask
    /// covers are `UNLABELED`; a single class gets "others" appended.
    Demo,
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

#[derive(Debug, Clone)]
pub struct SegmentOptions {
    pub mode: Mode,
    /// A mask pixel is foreground for cropping when its value is strictly greater; `None` = the
    /// mode's default.
    pub threshold: Option<f32>,
    /// Ensemble weight of CLIP against the generator in [0, 1]; `None` = the mode's default.
    pub lambda: Option<f32>,
    /// Run the model's mask generator (when it has one).
    pub generator: bool,
    /// Templates for the class embeddings; `None` = the manifest's.
    pub templates: Option<Vec<String>>,
    pub overflow: Overflow,
    /// Processing size: short side and long-side limit; `None` = the manifest's (OVSeg's 640 and
    /// 2560 unless the model says otherwise).
    pub short_side: Option<usize>,
    pub max_side: Option<usize>,
    /// Images with more pixels are refused.
    pub max_pixels: usize,
    /// Also return the per-class score maps `[classes, height, width]`.
    pub scores: bool,
    /// Also return the CLIP crops `[valid masks, 3, size, size]` (normalized).
    pub crops: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Semantic,
            threshold: None,
            lambda: None,
            generator: true,
            templates: None,
            overflow: Overflow::Error,
            short_side: None,
            max_side: None,
            max_pixels: DEFAULT_MAX_PIXELS,
            scores: false,
            crops: false,
        }
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
    pub crop_ms: f64,
    pub text_ms: f64,
    pub image_encoder_ms: f64,
    pub aggregate_ms: f64,
    /// Time inside ONNX Runtime's session runs (generator, text and image encoders).
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

impl Model {
    /// Segments `rgb` (`[height, width, 3]` bytes) into `classes`, with the model's generator
    /// (unless `options.generator` is false), the caller's `masks`, or both.
    pub fn segment(
        &self,
        rgb: &[u8],
        (height, width): (usize, usize),
        masks: Option<MaskInput>,
        classes: &[impl AsRef<str>],
        options: &SegmentOptions,
    ) -> Result<Segmentation> {
        let start = Instant::now();
        check_classes(classes)?;
        let mode = options.mode;
        let threshold = options.threshold.unwrap_or(mode.default_threshold());
        let lambda = options.lambda.unwrap_or(mode.default_lambda());
        if !threshold.is_finite() {
            bail!(
                InvalidArgument,
                "Expected a finite number for `threshold` but received {threshold}"
            );
        }
        if !(0.0..=1.0).contains(&lambda) {
            bail!(
                InvalidArgument,
                "Expected a number in [0, 1] for `lambda` but received {lambda}"
            );
        }
        let mut classes: Vec<String> = classes.iter().map(|c| c.as_ref().to_owned()).collect();
        let user_classes = classes.len();
        if mode == Mode::Demo && user_classes == 1 && classes[0] != OTHERS {
            classes.push(OTHERS.to_owned());
        }
        let n = classes.len();
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
        let use_generator = options.generator && self.has_generator();
        if !use_generator && caller.is_none() {
            bail!(
                InvalidArgument,
                "no mask source: {} and no masks were given",
                if self.has_generator() {
                    "the generator is switched off"
                } else {
                    "this model has no mask generator"
                }
            );
        }
        let mut timings = Timings::default();

        let t = Instant::now();
        let processing = self.manifest.processing_size();
        let (rh, rw) = shortest_edge_size(
            height,
            width,
            options.short_side.unwrap_or(processing.short_side),
            options.max_side.unwrap_or(processing.max_size),
        );
        let rplane = rh * rw;
        let resized = resize_rgb(rgb, (height, width), (rh, rw))?;
        let caller_resized = caller
            .as_ref()
            .map(|soft| bilinear_resize(soft, soft.len() / plane, (height, width), (rh, rw)));
        timings.resize_ms = ms(t);
        cancel::check()?;

        let proposals = if use_generator {
            let t = Instant::now();
            let proposals = self.propose(&resized, (rh, rw))?;
            timings.generator_ms = ms(t);
            cancel::check()?;
            Some(proposals)
        } else {
            None
        };
        timings.session_ms += proposals.as_ref().map_or(0.0, |p| p.session_ms);
        let (generated, embeddings, generator_masks) = match proposals {
            Some(p) => (p.queries, Some(p.embeddings), Some(p.masks)),
            None => (0, None, None),
        };
        // Generator masks first, then the caller's, `[queries, rh, rw]`.
        let all_masks: Vec<f32> = match (generator_masks, caller_resized) {
            (Some(mut g), Some(c)) => {
                g.extend_from_slice(&c);
                g
            }
            (Some(g), None) => g,
            (None, Some(c)) => c,
            (None, None) => unreachable!("checked above"),
        };
        let queries = all_masks.len() / rplane;

        let t = Instant::now();
        let clip = &self.manifest.clip;
        let crop_options = CropOptions {
            threshold,
            size: clip.image_size,
            mean: self.manifest.pixel_mean,
            std: self.manifest.pixel_std,
        };
        let crops = crop_masks(&resized, rh, rw, &all_masks, &crop_options)?;
        timings.crop_ms = ms(t);
        cancel::check()?;
        let valid: Vec<bool> = crops.boxes.iter().map(Option::is_some).collect();

        let t = Instant::now();
        let class_matrix = self.class_embeddings(
            &classes,
            options.templates.as_deref(),
            options.overflow,
            self.has_no_object(),
        )?;
        timings.text_ms = ms(t);
        timings.session_ms += class_matrix.session_ms;
        cancel::check()?;

        let p_clip = if valid.iter().any(|&v| v) {
            let t = Instant::now();
            let features = self.encode_image(
                Pixels::Normalized(&crops.pixels),
                Some(&crops.masks),
                true,
                true,
            )?;
            timings.image_encoder_ms = ms(t);
            timings.session_ms += features.session_ms;
            clip_probabilities(&features.data, &class_matrix.data, n, class_matrix.dim)
        } else {
            Vec::new()
        };

        cancel::check()?;
        let t = Instant::now();
        // Final probabilities of the used masks: generator queries through the ensemble, caller
        // masks by CLIP alone (they have no generator score; an invalid one is left out).
        let generator_valid = valid[..generated].iter().filter(|&&v| v).count();
        let (mut used, mut probabilities) = match &embeddings {
            Some(embeddings) => {
                let p_gen =
                    generator_probabilities(embeddings, &class_matrix.data, class_matrix.dim)?;
                let e = ensemble(
                    &p_gen,
                    &p_clip[..generator_valid * n],
                    &valid[..generated],
                    n,
                    lambda,
                )?;
                (e.kept, e.probabilities)
            }
            None => (Vec::new(), Vec::new()),
        };
        let mut caller_rows = p_clip[generator_valid * n..].chunks_exact(n);
        for q in (generated..queries).filter(|&q| valid[q]) {
            used.push(q);
            probabilities
                .extend_from_slice(caller_rows.next().expect("one CLIP row per valid mask"));
        }
        let binarized: Vec<f32>;
        let (rows, masks_used): (Vec<usize>, Vec<&[f32]>) = match mode {
            Mode::Semantic => (
                (0..used.len()).collect(),
                used.iter()
                    .map(|&q| &all_masks[q * rplane..][..rplane])
                    .collect(),
            ),
            Mode::Demo => {
                let rows = best_rows_per_class(&probabilities, n, user_classes);
                binarized = rows
                    .iter()
                    .flat_map(|&r| {
                        all_masks[used[r] * rplane..][..rplane]
                            .iter()
                            .map(|&v| f32::from(u8::from(v > threshold)))
                    })
                    .collect();
                let masks = binarized.chunks_exact(rplane).collect();
                (rows, masks)
            }
        };
        let row_probabilities: Vec<f32> = rows
            .iter()
            .flat_map(|&r| probabilities[r * n..][..n].iter().copied())
            .collect();
        let scores = if rows.is_empty() {
            vec![0f32; n * plane]
        } else {
            let small = semantic_scores(&row_probabilities, &masks_used, n, rplane)?;
            cancel::check()?;
            bilinear_resize(&small, n, (rh, rw), (height, width))
        };
        cancel::check()?;
        let mut labels = argmax_labels(&scores, n, plane)?;
        if mode == Mode::Demo {
            mark_unlabeled(&mut labels, &scores, n);
        }
        let mut class_pixels = vec![0u64; n];
        labels
            .iter()
            .filter(|&&l| usize::from(l) < n)
            .for_each(|&l| class_pixels[usize::from(l)] += 1);
        if mode == Mode::Demo {
            // Only the selected masks are used in demo mode.
            let selected: Vec<usize> = rows.iter().map(|&r| used[r]).collect();
            probabilities = row_probabilities;
            used = selected;
        }
        let scale = (width as f64 / rw as f64, height as f64 / rh as f64);
        let mut used_rows = used.iter().zip(probabilities.chunks_exact(n)).peekable();
        let segments = (0..queries)
            .map(|q| {
                let row = match used_rows.peek() {
                    Some(&(&u, row)) if u == q => {
                        used_rows.next();
                        Some(row)
                    }
                    _ => None,
                };
                let best = row.and_then(|row| {
                    row.iter()
                        .enumerate()
                        .fold(None, |best: Option<(usize, f32)>, (c, &p)| match best {
                            Some((_, bp)) if bp >= p => best,
                            _ => Some((c, p)),
                        })
                });
                let (source, index) = if q < generated {
                    (MaskSource::Generator, q)
                } else {
                    (MaskSource::Caller, q - generated)
                };
                Segment {
                    source,
                    index,
                    valid: valid[q],
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
            .collect();
        timings.aggregate_ms = ms(t);
        timings.total_ms = ms(start);
        Ok(Segmentation {
            width,
            height,
            classes,
            labels,
            class_pixels,
            segments,
            probabilities,
            scores: options.scores.then_some(scores),
            crops: options.crops.then_some(crops.pixels),
            processing_size: (rh, rw),
            timings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

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
}
