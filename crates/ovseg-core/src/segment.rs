//! OVSeg's two-stage inference for masks the caller supplies (SAM or anything else): resize the
//! image as OVSeg does (short side 640), resize the masks to it (bilinear), crop and encode each
//! mask with the mask-prompted CLIP, classify with CLIP alone (caller masks have no generator
//! score; an invalid mask is left out, as OVSeg's CLIP-only path does), sum the probability-weighted
//! soft masks, resize the scores to the original size, argmax.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Instant;

use crate::aggregate::{argmax_labels, bilinear_resize, semantic_scores};
use crate::classify::clip_probabilities;
use crate::error::{bail, Result};
use crate::image_encoder::Pixels;
use crate::image_resize::{resize_rgb, shortest_edge_size};
use crate::mask_crop::{crop_masks, CropOptions};
use crate::model::Model;
use crate::tokenizer::Overflow;

/// sharp's default `limitInputPixels` (0x3FFF * 0x3FFF).
pub const DEFAULT_MAX_PIXELS: usize = 0x3FFF * 0x3FFF;

#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// A mask pixel is foreground for cropping when its value is strictly greater. OVSeg: 0.4.
    pub threshold: f32,
    /// Templates for the class embeddings; `None` = the manifest's.
    pub templates: Option<Vec<String>>,
    pub overflow: Overflow,
    /// OVSeg's processing size: short side and long-side limit.
    pub short_side: usize,
    pub max_side: usize,
    /// Images with more pixels are refused.
    pub max_pixels: usize,
    /// Also return the per-class score maps `[classes, height, width]`.
    pub scores: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            threshold: 0.4,
            templates: None,
            overflow: Overflow::Error,
            short_side: 640,
            max_side: 2560,
            max_pixels: DEFAULT_MAX_PIXELS,
            scores: false,
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

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Index of the caller's mask.
    pub mask: usize,
    /// Whether any pixel passed the threshold (only valid masks are classified).
    pub valid: bool,
    /// CLIP's best class for this mask, and its probability (valid masks only).
    pub class: Option<u16>,
    pub score: f32,
    /// `[x0, y0, x1, y1]` (exclusive) of the mask's foreground at the original size.
    pub bbox: Option<[usize; 4]>,
    /// Foreground pixels at the original size.
    pub area: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    pub resize_ms: f64,
    pub crop_ms: f64,
    pub image_encoder_ms: f64,
    pub text_ms: f64,
    pub aggregate_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    pub width: usize,
    pub height: usize,
    /// `[height * width]` class index per pixel (all 0 when no mask is valid; see `segments`).
    pub labels: Vec<u16>,
    /// Pixels per class.
    pub class_pixels: Vec<u64>,
    pub segments: Vec<Segment>,
    /// `[valid masks, classes]` CLIP probabilities, in mask order.
    pub probabilities: Vec<f32>,
    /// `[classes, height, width]` when asked for.
    pub scores: Option<Vec<f32>>,
    /// The processing size `(height, width)` the image was resized to.
    pub processing_size: (usize, usize),
    pub timings: Timings,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Class names must be non-empty, distinct and fit a 16-bit label map.
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

impl Model {
    /// Segments `rgb` (`[height, width, 3]` bytes) into `classes` with the caller's masks.
    pub fn segment(
        &self,
        rgb: &[u8],
        (height, width): (usize, usize),
        masks: MaskInput,
        classes: &[impl AsRef<str>],
        options: &SegmentOptions,
    ) -> Result<Segmentation> {
        check_classes(classes)?;
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
        // Soft masks are used in place; only binary masks need converting.
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
        if let Some(i) = soft.iter().position(|v| v.is_nan()) {
            bail!(
                InvalidMask,
                "mask {} has NaN at pixel {}",
                i / plane,
                i % plane
            );
        }
        let queries = soft.len() / plane;
        let mut timings = Timings::default();

        let t = Instant::now();
        let (rh, rw) = shortest_edge_size(height, width, options.short_side, options.max_side);
        let resized = resize_rgb(rgb, (height, width), (rh, rw))?;
        let resized_masks = bilinear_resize(&soft, queries, (height, width), (rh, rw));
        timings.resize_ms = ms(t);

        let t = Instant::now();
        let clip = &self.manifest.clip;
        let crop_options = CropOptions {
            threshold: options.threshold,
            size: clip.image_size,
            mean: self.manifest.pixel_mean,
            std: self.manifest.pixel_std,
        };
        let crops = crop_masks(&resized, rh, rw, &resized_masks, &crop_options)?;
        timings.crop_ms = ms(t);

        let t = Instant::now();
        let class_matrix = self.class_embeddings(
            classes,
            options.templates.as_deref(),
            options.overflow,
            self.has_no_object(),
        )?;
        timings.text_ms = ms(t);

        let n = classes.len();
        let valid: Vec<usize> = (0..queries).filter(|&q| crops.boxes[q].is_some()).collect();
        let probabilities = if valid.is_empty() {
            Vec::new()
        } else {
            let t = Instant::now();
            let features = self.encode_image(
                Pixels::Normalized(&crops.pixels),
                Some(&crops.masks),
                true,
                true,
            )?;
            timings.image_encoder_ms = ms(t);
            clip_probabilities(&features.data, &class_matrix.data, n, class_matrix.dim)
        };

        let t = Instant::now();
        let kept_masks: Vec<f32> = valid
            .iter()
            .flat_map(|&q| resized_masks[q * rh * rw..][..rh * rw].iter().copied())
            .collect();
        let scores = if valid.is_empty() {
            vec![0f32; n * plane]
        } else {
            bilinear_resize(
                &semantic_scores(&probabilities, &kept_masks, n, rh * rw)?,
                n,
                (rh, rw),
                (height, width),
            )
        };
        let labels = argmax_labels(&scores, n, plane)?;
        let mut class_pixels = vec![0u64; n];
        labels
            .iter()
            .for_each(|&l| class_pixels[usize::from(l)] += 1);
        let mut rows = probabilities.chunks_exact(n);
        let segments = (0..queries)
            .map(|q| {
                let mask = &soft[q * plane..][..plane];
                let (bbox, area) = foreground_box(mask, width, options.threshold);
                let best = crops.boxes[q].and_then(|_| rows.next()).and_then(|row| {
                    row.iter()
                        .enumerate()
                        .fold(None, |best: Option<(usize, f32)>, (c, &p)| match best {
                            Some((_, bp)) if bp >= p => best,
                            _ => Some((c, p)),
                        })
                });
                Segment {
                    mask: q,
                    valid: crops.boxes[q].is_some(),
                    class: best.map(|(c, _)| c as u16),
                    score: best.map_or(0.0, |(_, p)| p),
                    bbox,
                    area,
                }
            })
            .collect();
        timings.aggregate_ms = ms(t);
        Ok(Segmentation {
            width,
            height,
            labels,
            class_pixels,
            segments,
            probabilities,
            scores: options.scores.then_some(scores),
            processing_size: (rh, rw),
            timings,
        })
    }
}

/// Box and area of `mask > threshold` at the mask's own size.
fn foreground_box(mask: &[f32], width: usize, threshold: f32) -> (Option<[usize; 4]>, usize) {
    let (mut x0, mut y0, mut x1, mut y1, mut area) = (usize::MAX, usize::MAX, 0, 0, 0);
    for (y, row) in mask.chunks_exact(width).enumerate() {
        for (x, _) in row.iter().enumerate().filter(|(_, &v)| v > threshold) {
            x0 = x0.min(x);
            x1 = x1.max(x + 1);
            y0 = y0.min(y);
            y1 = y + 1;
            area += 1;
        }
    }
    ((area > 0).then_some([x0, y0, x1, y1]), area)
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
    fn foreground_box_is_tight() {
        let mut m = vec![0f32; 12];
        m[5] = 0.5; // (x=1, y=1) in a 4-wide mask
        m[11] = 0.9; // (x=3, y=2)
        assert_eq!(foreground_box(&m, 4, 0.4), (Some([1, 1, 4, 3]), 2));
        assert_eq!(foreground_box(&[0.4; 4], 2, 0.4), (None, 0));
    }
}
