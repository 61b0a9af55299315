//! Segment Anything's automatic mask generator over a SAM proposal-model directory
//! (docs/model-format.md, "SAM proposal models"), with the semantics of segment-anything's
//! `SamAutomaticMaskGenerator`:
//!
//! 1. the crops: the whole image, then `crop_n_layers` layers of 2^i x 2^i overlapping crops;
//!    per crop, its longest side resized to the model's size (PIL's bilinear, `resize_rgb`),
//!    normalized, zero-padded; the image encoder once;
//! 2. a regular grid of points (`points_per_side / crop_n_points_downscale_factor^i` per side on
//!    layer i, cell centres), one prompt each, decoded in batches of `points_per_batch`, three
//!    masks per point;
//! 3. per mask: the low-resolution logits upscaled as SAM's `postprocess_masks` does (bilinear to
//!    the padded size, cropped to the resized crop, bilinear to the crop), kept when the
//!    predicted IoU is above `pred_iou_thresh` and the stability score (the area above
//!    threshold + offset over the area above threshold − offset) at least
//!    `stability_score_thresh`; thresholded to a binary mask and its box; dropped when the box
//!    lies within 20 pixels of an edge of its crop that is not an edge of the image;
//! 4. box non-maximum suppression within each crop by predicted IoU (torchvision's `nms`), then
//!    across crops preferring the smaller crop (`crop_nms_thresh`);
//! 5. with `min_mask_region_area` > 0: holes, then islands, smaller than it removed from each mask
//!    (8-connected, as OpenCV's `connectedComponentsWithStats`), and one more box NMS that
//!    prefers the masks left unchanged.
//!
//! `tests/parity_sam.rs` checks each step against the reference package.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ort::value::TensorRef;
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{bail, ErrorCode, Result};
use crate::graph::{Dim, Graph, Port, SessionOptions};
use crate::resample::{bilinear_resize_window, bilinear_rows, resize_rgb};

pub const SAM_FORMAT: &str = "ovseg-sam";
pub const SAM_FORMAT_VERSION: u64 = 1;
pub const SAM_MANIFEST_FILE: &str = "sam.json";
/// Largest `imageSize` a manifest may declare (the released models use 1024).
const MAX_IMAGE_SIZE: usize = 4096;
/// Largest embedding channel count a manifest may declare (the released models use 256).
const MAX_CHANNELS: usize = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SamManifest {
    pub format: String,
    pub version: u64,
    pub name: String,
    pub image_size: usize,
    pub embedding: SamEmbeddingShape,
    pub mask_size: usize,
    pub pixel_mean: [f32; 3],
    pub pixel_std: [f32; 3],
    pub mask_threshold: f32,
    pub graphs: SamGraphs,
    /// What the exporter read from the weights: for information only.
    pub geometry: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamEmbeddingShape {
    pub channels: usize,
    pub grid: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SamGraphs {
    pub image_encoder: String,
    pub mask_decoder: String,
}

impl SamManifest {
    pub fn parse(text: &[u8]) -> Result<Self> {
        let m: SamManifest = serde_json::from_slice(text).map_err(|e| {
            crate::error::Error::caused_by(
                ErrorCode::ManifestInvalid,
                format!("{SAM_MANIFEST_FILE}: {e}"),
                e,
            )
        })?;
        if m.format != SAM_FORMAT {
            bail!(
                ManifestInvalid,
                "{SAM_MANIFEST_FILE}: format {:?}, expected {SAM_FORMAT:?}",
                m.format
            );
        }
        if m.version != SAM_FORMAT_VERSION {
            bail!(
                ManifestVersion,
                "{SAM_MANIFEST_FILE}: version {}, this ovseg reads version {SAM_FORMAT_VERSION}",
                m.version
            );
        }
        let (s, g) = (m.image_size, m.embedding.grid);
        if s == 0 || s > MAX_IMAGE_SIZE || g == 0 || s % g != 0 {
            bail!(
                ManifestInvalid,
                "{SAM_MANIFEST_FILE}: imageSize {s} must be 1 to {MAX_IMAGE_SIZE} and a multiple of embedding.grid {g}"
            );
        }
        if m.mask_size != 4 * g {
            bail!(
                ManifestInvalid,
                "{SAM_MANIFEST_FILE}: maskSize {} must be 4 x embedding.grid ({})",
                m.mask_size,
                4 * g
            );
        }
        if m.embedding.channels == 0 || m.embedding.channels > MAX_CHANNELS {
            bail!(
                ManifestInvalid,
                "{SAM_MANIFEST_FILE}: embedding.channels {} must be 1 to {MAX_CHANNELS}",
                m.embedding.channels
            );
        }
        let finite = m
            .pixel_mean
            .iter()
            .chain(&m.pixel_std)
            .all(|v| v.is_finite())
            && m.mask_threshold.is_finite();
        if !finite || m.pixel_std.iter().any(|&v| v <= 0.0) {
            bail!(
                ManifestInvalid,
                "{SAM_MANIFEST_FILE}: pixelMean, pixelStd and maskThreshold must be finite, pixelStd > 0"
            );
        }
        Ok(m)
    }
}

/// The automatic mask generator's options (segment-anything's names; its defaults).
#[derive(Debug, Clone, Copy)]
pub struct AmgOptions {
    pub points_per_side: usize,
    pub points_per_batch: usize,
    pub pred_iou_thresh: f32,
    pub stability_score_thresh: f32,
    pub stability_score_offset: f32,
    pub box_nms_thresh: f32,
    /// Layers of crops beside the whole image (layer i: 2^i x 2^i crops).
    pub crop_n_layers: usize,
    pub crop_nms_thresh: f32,
    /// Overlap of neighbouring crops, as a fraction of the image's short side at layer 1.
    pub crop_overlap_ratio: f64,
    /// The point grid side is divided by this on each layer.
    pub crop_n_points_downscale_factor: usize,
    /// Holes and islands smaller than this (pixels) are removed; 0: none.
    pub min_mask_region_area: u64,
}

/// Limits of `AmgOptions` (a point grid of at most 256 x 256, batches of at most 4096 prompts,
/// 3 crop layers: 1 + 4 + 16 + 64 encoder runs).
pub const MAX_POINTS_PER_SIDE: usize = 256;
pub const MAX_POINTS_PER_BATCH: usize = 4096;
pub const MAX_CROP_LAYERS: usize = 3;

/// A crop of the image, `[x0, y0, x1, y1]` with `x1` and `y1` exclusive (segment-anything's crop boxes).
pub type CropBox = [usize; 4];

impl AmgOptions {
    /// `INVALID_ARGUMENT` for options out of range, before any work.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_POINTS_PER_SIDE).contains(&self.points_per_side) {
            bail!(InvalidArgument, "Expected an integer from 1 to {MAX_POINTS_PER_SIDE} for `pointsPerSide` but received {}", self.points_per_side);
        }
        if !(1..=MAX_POINTS_PER_BATCH).contains(&self.points_per_batch) {
            bail!(InvalidArgument, "Expected an integer from 1 to {MAX_POINTS_PER_BATCH} for `pointsPerBatch` but received {}", self.points_per_batch);
        }
        for (name, v) in [
            ("predIouThresh", self.pred_iou_thresh),
            ("stabilityScoreThresh", self.stability_score_thresh),
            ("boxNmsThresh", self.box_nms_thresh),
            ("cropNmsThresh", self.crop_nms_thresh),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!(
                    InvalidArgument,
                    "Expected a number in [0, 1] for `{name}` but received {v}"
                );
            }
        }
        if !(self.stability_score_offset.is_finite() && self.stability_score_offset >= 0.0) {
            bail!(
                InvalidArgument,
                "Expected a finite number >= 0 for `stabilityScoreOffset` but received {}",
                self.stability_score_offset
            );
        }
        if self.crop_n_layers > MAX_CROP_LAYERS {
            bail!(
                InvalidArgument,
                "Expected an integer from 0 to {MAX_CROP_LAYERS} for `cropNLayers` but received {}",
                self.crop_n_layers
            );
        }
        if !(0.0..1.0).contains(&self.crop_overlap_ratio) {
            bail!(
                InvalidArgument,
                "Expected a number in [0, 1) for `cropOverlapRatio` but received {}",
                self.crop_overlap_ratio
            );
        }
        let last_side = self
            .crop_n_points_downscale_factor
            .checked_pow(self.crop_n_layers as u32)
            .map_or(0, |d| self.points_per_side.checked_div(d).unwrap_or(0));
        if last_side == 0 {
            bail!(InvalidArgument, "Expected a positive integer for `cropNPointsDownscaleFactor` whose power `cropNLayers` ({}) is at most `pointsPerSide` ({}) but received {}", self.crop_n_layers, self.points_per_side, self.crop_n_points_downscale_factor);
        }
        Ok(())
    }

    /// The point grid's side on crop layer `layer` (segment-anything's `build_all_layer_point_grids`).
    pub fn points_per_side_on(&self, layer: usize) -> usize {
        self.points_per_side / self.crop_n_points_downscale_factor.pow(layer as u32)
    }
}

impl Default for AmgOptions {
    fn default() -> Self {
        Self {
            points_per_side: 32,
            points_per_batch: 64,
            pred_iou_thresh: 0.88,
            stability_score_thresh: 0.95,
            stability_score_offset: 1.0,
            box_nms_thresh: 0.7,
            crop_n_layers: 0,
            crop_nms_thresh: 0.7,
            crop_overlap_ratio: 512.0 / 1500.0,
            crop_n_points_downscale_factor: 1,
            min_mask_region_area: 0,
        }
    }
}

/// One generated mask.
#[derive(Debug, Clone)]
pub struct SamMask {
    /// `[height * width]`, 1 inside.
    pub mask: Vec<u8>,
    /// `[x0, y0, x1, y1]`, inclusive pixel coordinates (all 0 for an empty mask), as SAM's `batched_mask_to_box`.
    pub bbox: [u32; 4],
    pub area: u64,
    pub predicted_iou: f32,
    pub stability_score: f32,
    /// The prompt point, in image pixels.
    pub point: [f64; 2],
}

/// segment-anything's `ResizeLongestSide.get_preprocess_shape`: `(height, width)` with the longest side `long`.
pub fn preprocess_shape(height: usize, width: usize, long: usize) -> (usize, usize) {
    let scale = long as f64 / height.max(width) as f64;
    (
        (height as f64 * scale + 0.5) as usize,
        (width as f64 * scale + 0.5) as usize,
    )
}

/// segment-anything's `build_point_grid`: cell centres of an `n` x `n` grid in [0, 1]^2, `(x, y)`, row by row.
pub fn point_grid(n: usize) -> Vec<[f64; 2]> {
    let offset = 1.0 / (2 * n) as f64;
    // numpy's linspace(offset, 1 - offset, n): start + i * step, the last exactly the end.
    let step = if n > 1 {
        (1.0 - 2.0 * offset) / (n - 1) as f64
    } else {
        0.0
    };
    let side: Vec<f64> = (0..n)
        .map(|i| {
            if n > 1 && i == n - 1 {
                1.0 - offset
            } else {
                offset + i as f64 * step
            }
        })
        .collect();
    side.iter()
        .flat_map(|&y| side.iter().map(move |&x| [x, y]))
        .collect()
}

/// The point grid in the pixels of an image `(h, w)`, as segment-anything scales it.
pub fn image_points(points_per_side: usize, (h, w): (usize, usize)) -> Vec<[f64; 2]> {
    point_grid(points_per_side)
        .into_iter()
        .map(|[x, y]| [x * w as f64, y * h as f64])
        .collect()
}

/// segment-anything's `generate_crop_boxes`: the whole image (layer 0), then on layer i a grid of
/// 2^i x 2^i overlapping crops (x-major order), each with its layer.
pub fn crop_boxes(
    (h, w): (usize, usize),
    n_layers: usize,
    overlap_ratio: f64,
) -> Vec<(CropBox, usize)> {
    let mut out = vec![([0, 0, w, h], 0)];
    let short = h.min(w) as f64;
    for layer in 1..=n_layers {
        let n = 1usize << layer;
        let overlap = (overlap_ratio * short * (2.0 / n as f64)) as usize;
        let len = |side: usize| ((overlap * (n - 1) + side) as f64 / n as f64).ceil() as usize;
        let (cw, ch) = (len(w), len(h));
        for i in 0..n {
            for j in 0..n {
                let (x0, y0) = (
                    cw.saturating_sub(overlap) * i,
                    ch.saturating_sub(overlap) * j,
                );
                out.push(([x0, y0, (x0 + cw).min(w), (y0 + ch).min(h)], layer));
            }
        }
    }
    out
}

/// torchvision's `nms`: indices of the kept boxes `[x0, y0, x1, y1]`, by decreasing score (ties
/// in input order); a box is dropped when its IoU with a kept one is above `threshold`. Areas
/// are `(x1 - x0) * (y1 - y0)`, as torchvision computes them on these inclusive boxes.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let a = &boxes[i];
        for &j in &order[k + 1..] {
            if suppressed[j] {
                continue;
            }
            let b = &boxes[j];
            let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (area(a) + area(b) - inter);
            if iou > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// What the decoder gave for one batch of points: `[points, 3, m, m]` logits and `[points, 3]` IoUs.
pub struct DecodedBatch<'a> {
    pub low_res: &'a [f32],
    pub iou: &'a [f32],
    /// The batch's points in image pixels.
    pub points: &'a [[f64; 2]],
}

/// The geometry a batch's masks are upscaled through.
#[derive(Debug, Clone, Copy)]
pub struct Frames {
    /// The decoder's mask side.
    pub mask_size: usize,
    /// The padded encoder input's side.
    pub image_size: usize,
    /// The resized crop inside it.
    pub input_size: (usize, usize),
    /// The crop's size: the masks' frame.
    pub original: (usize, usize),
    /// The crop in the image, and the image's size.
    pub crop: CropBox,
    pub image: (usize, usize),
    pub mask_threshold: f32,
}

/// A mask that passed the filters, held one bit per pixel until the NMS: thousands of candidates
/// of a large image would otherwise take gigabytes.
pub struct Candidate {
    bits: Vec<u64>,
    pub bbox: [u32; 4],
    pub area: u64,
    pub predicted_iou: f32,
    pub stability_score: f32,
    pub point: [f64; 2],
}

impl Candidate {
    /// The candidate in the image's frame: bits, box and point moved by the crop's corner.
    fn uncrop(mut self, crop: CropBox, (h, w): (usize, usize)) -> Self {
        let (cw, ch) = (crop[2] - crop[0], crop[3] - crop[1]);
        if (ch, cw) != (h, w) {
            let mut bits = vec![0u64; (h * w).div_ceil(64)];
            for y in 0..ch {
                for x in 0..cw {
                    let i = y * cw + x;
                    if (self.bits[i / 64] >> (i % 64)) & 1 != 0 {
                        let j = (y + crop[1]) * w + x + crop[0];
                        bits[j / 64] |= 1 << (j % 64);
                    }
                }
            }
            self.bits = bits;
        }
        // An empty mask's box [0, 0, 0, 0] moves too, as segment-anything's uncrop_boxes_xyxy moves it.
        let (x0, y0) = (crop[0] as u32, crop[1] as u32);
        let b = self.bbox;
        self.bbox = [b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0];
        self.point = [
            self.point[0] + crop[0] as f64,
            self.point[1] + crop[1] as f64,
        ];
        self
    }

    fn into_mask(self, pixels: usize) -> SamMask {
        let mask = (0..pixels)
            .map(|i| ((self.bits[i / 64] >> (i % 64)) & 1) as u8)
            .collect();
        SamMask {
            mask,
            bbox: self.bbox,
            area: self.area,
            predicted_iou: self.predicted_iou,
            stability_score: self.stability_score,
            point: self.point,
        }
    }
}

/// One upscaled mask scored row by row: the stability counts, and the binary mask (bits), its
/// area and its box, in one pass over the logits.
struct Scoring {
    width: usize,
    threshold: f32,
    high: f32,
    low: f32,
    intersections: usize,
    unions: usize,
    bits: Vec<u64>,
    area: u64,
    /// Inclusive; `x0 == usize::MAX` while empty.
    bbox: [usize; 4],
}

impl Scoring {
    fn new((h, w): (usize, usize), threshold: f32, offset: f32) -> Self {
        Self {
            width: w,
            threshold,
            high: threshold + offset,
            low: threshold - offset,
            intersections: 0,
            unions: 0,
            bits: vec![0u64; (h * w).div_ceil(64)],
            area: 0,
            bbox: [usize::MAX, usize::MAX, 0, 0],
        }
    }

    fn row(&mut self, y: usize, row: &[f32]) {
        let (high, low, t) = (self.high, self.low, self.threshold);
        let start = y * self.width;
        let (mut first, mut last) = (usize::MAX, 0);
        for (k, chunk) in row.chunks(64).enumerate() {
            // The three comparisons in one loop that vectorizes, then 64 pixels to a word.
            let mut flags = [0u8; 64];
            let (mut above_high, mut above_low) = (0u32, 0u32);
            for (f, &v) in flags.iter_mut().zip(chunk) {
                above_high += u32::from(v > high);
                above_low += u32::from(v > low);
                *f = u8::from(v > t);
            }
            self.intersections += above_high as usize;
            self.unions += above_low as usize;
            // Eight 0/1 bytes to the bits of one byte: the multiply gathers byte i's bit at bit
            // 56 + i (no carries reach there).
            let word = flags
                .chunks_exact(8)
                .enumerate()
                .fold(0u64, |word, (j, eight)| {
                    let bytes = u64::from_le_bytes(eight.try_into().expect("8 bytes"));
                    word | ((bytes.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * j))
                });
            if word == 0 {
                continue;
            }
            self.area += u64::from(word.count_ones());
            first = first.min(k * 64 + word.trailing_zeros() as usize);
            last = k * 64 + 63 - word.leading_zeros() as usize;
            // The word at bit `start + 64k` of the plane, across two words when unaligned.
            let bit = start + k * 64;
            let (at, shift) = (bit / 64, bit % 64);
            self.bits[at] |= word << shift;
            if shift != 0 {
                if let Some(next) = self.bits.get_mut(at + 1) {
                    *next |= word >> (64 - shift);
                }
            }
        }
        if first != usize::MAX {
            let b = &mut self.bbox;
            *b = [b[0].min(first), b[1].min(y), b[2].max(last), y];
        }
    }

    /// SAM's `batched_mask_to_box`: all 0 when empty.
    fn bbox(&self) -> [u32; 4] {
        if self.bbox[0] == usize::MAX {
            return [0; 4];
        }
        self.bbox.map(|v| v as u32)
    }
}

/// segment-anything's `_process_batch` for one crop: the masks of one batch that pass the IoU,
/// stability and crop-edge filters, binary in the crop's frame, with their boxes.
pub fn process_batch(batch: &DecodedBatch, frames: &Frames, o: &AmgOptions) -> Vec<Candidate> {
    let m = frames.mask_size;
    let (h, w) = frames.original;
    let padded = (frames.image_size, frames.image_size);
    // Masks in parallel, in order (collect keeps the indices' order).
    batch
        .iou
        .par_iter()
        .zip(batch.low_res.par_chunks_exact(m * m))
        .enumerate()
        .filter_map(|(index, (&iou, logits))| {
            if o.pred_iou_thresh > 0.0 && iou <= o.pred_iou_thresh {
                return None;
            }
            // SAM's postprocess_masks: bilinear to the padded size (only the resized crop's
            // window is needed), then bilinear to the crop, scored row by row. When the crop is
            // the resized size already the second resize is the identity (weights 1 and 0).
            let mut s = Scoring::new((h, w), frames.mask_threshold, o.stability_score_offset);
            if frames.input_size == (h, w) {
                bilinear_rows(logits, (m, m), padded, (h, w), |y, row| s.row(y, row));
            } else {
                let window =
                    bilinear_resize_window(logits, 1, (m, m), padded, frames.input_size, |v| v);
                bilinear_rows(&window, frames.input_size, (h, w), (h, w), |y, row| {
                    s.row(y, row)
                });
            }
            let stability = s.intersections as f32 / s.unions as f32;
            // A NaN score (an empty union) fails the test, as in the reference.
            let stable = stability >= o.stability_score_thresh;
            if o.stability_score_thresh > 0.0 && !stable {
                return None;
            }
            let bbox = s.bbox();
            if near_crop_edge(bbox, frames.crop, frames.image) {
                return None;
            }
            Some(Candidate {
                bbox,
                area: s.area,
                bits: s.bits,
                predicted_iou: iou,
                stability_score: stability,
                point: batch.points[index / 3],
            })
        })
        .collect()
}

/// SAM's `batched_mask_to_box` for one mask: inclusive `[x0, y0, x1, y1]`, all 0 when empty.
fn mask_box(mask: &[u8], (h, w): (usize, usize)) -> [u32; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (y, row) in mask.chunks_exact(w).enumerate().take(h) {
        if let Some(first) = row.iter().position(|&v| v != 0) {
            let last = row.iter().rposition(|&v| v != 0).unwrap_or(first);
            x0 = x0.min(first);
            x1 = x1.max(last);
            y0 = y0.min(y);
            y1 = y;
        }
    }
    if x0 == usize::MAX {
        return [0; 4];
    }
    [x0 as u32, y0 as u32, x1 as u32, y1 as u32]
}

/// segment-anything's `is_box_near_crop_edge` (tolerance 20 pixels): a box (in its crop's frame)
/// near an edge of the crop that is not an edge of the image.
fn near_crop_edge(bbox: [u32; 4], crop: CropBox, (h, w): (usize, usize)) -> bool {
    let (x0, y0) = (crop[0] as f32, crop[1] as f32);
    let b = [
        bbox[0] as f32 + x0,
        bbox[1] as f32 + y0,
        bbox[2] as f32 + x0,
        bbox[3] as f32 + y0,
    ];
    let image = [0.0, 0.0, w as f32, h as f32];
    (0..4).any(|k| (b[k] - crop[k] as f32).abs() <= 20.0 && (b[k] - image[k]).abs() > 20.0)
}

/// The items `nms` keeps, in its order.
fn keep_by_nms<T>(items: Vec<T>, boxes: &[[u32; 4]], scores: &[f32], threshold: f32) -> Vec<T> {
    let boxes: Vec<[f32; 4]> = boxes.iter().map(|b| b.map(|v| v as f32)).collect();
    let keep = nms(&boxes, scores, threshold);
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    keep.into_iter()
        .map(|i| slots[i].take().expect("nms keeps an index once"))
        .collect()
}

/// The generator's masks over an image's crops: each crop's are suppressed within the crop and
/// moved into the image (`add_crop`); `finish` suppresses across crops and removes small regions.
pub struct MaskSet {
    image: (usize, usize),
    kept: Vec<Candidate>,
    /// Per kept mask: 1 / its crop's area (the smaller crop wins across crops).
    crop_scores: Vec<f32>,
    crops: usize,
}

impl MaskSet {
    pub fn new(image: (usize, usize)) -> Self {
        Self {
            image,
            kept: Vec::new(),
            crop_scores: Vec::new(),
            crops: 0,
        }
    }

    /// One crop's masks (from `process_batch`): box NMS by predicted IoU, then into the image.
    pub fn add_crop(&mut self, crop: CropBox, candidates: Vec<Candidate>, o: &AmgOptions) {
        let boxes: Vec<[u32; 4]> = candidates.iter().map(|c| c.bbox).collect();
        let scores: Vec<f32> = candidates.iter().map(|c| c.predicted_iou).collect();
        let area = ((crop[2] - crop[0]) * (crop[3] - crop[1])) as f32;
        for c in keep_by_nms(candidates, &boxes, &scores, o.box_nms_thresh) {
            self.kept.push(c.uncrop(crop, self.image));
            self.crop_scores.push(1.0 / area);
        }
        self.crops += 1;
    }

    /// The final masks, in segment-anything's order.
    pub fn finish(self, o: &AmgOptions) -> Vec<SamMask> {
        let (h, w) = self.image;
        let mut kept = self.kept;
        if self.crops > 1 {
            let boxes: Vec<[u32; 4]> = kept.iter().map(|c| c.bbox).collect();
            kept = keep_by_nms(kept, &boxes, &self.crop_scores, o.crop_nms_thresh);
        }
        if o.min_mask_region_area == 0 {
            return kept.into_iter().map(|c| c.into_mask(h * w)).collect();
        }
        // segment-anything's postprocess_small_regions: NMS over the cleaned masks' boxes, the
        // unchanged masks first (score 1, changed 0); a kept changed mask takes its new box.
        let cleaned: Vec<(SamMask, [u32; 4], bool)> = kept
            .into_par_iter()
            .map(|c| {
                let mut m = c.into_mask(h * w);
                let holes = remove_small_regions(&mut m.mask, (h, w), o.min_mask_region_area, 0);
                let islands = remove_small_regions(&mut m.mask, (h, w), o.min_mask_region_area, 1);
                let changed = holes || islands;
                if changed {
                    m.area = m.mask.iter().map(|&v| u64::from(v)).sum();
                }
                let bbox = mask_box(&m.mask, (h, w));
                (m, bbox, changed)
            })
            .collect();
        let boxes: Vec<[u32; 4]> = cleaned.iter().map(|c| c.1).collect();
        let scores: Vec<f32> = cleaned
            .iter()
            .map(|c| if c.2 { 0.0 } else { 1.0 })
            .collect();
        let threshold = o.box_nms_thresh.max(o.crop_nms_thresh);
        keep_by_nms(cleaned, &boxes, &scores, threshold)
            .into_iter()
            .map(|(mut m, bbox, changed)| {
                if changed {
                    m.bbox = bbox;
                }
                m
            })
            .collect()
    }
}

/// segment-anything's `remove_small_regions` on a 0/1 mask: the 8-connected regions of pixels
/// equal to `value` (0: holes, 1: islands) smaller than `area` are flipped; when every island is
/// small, the largest stays. Whether anything was small.
fn remove_small_regions(mask: &mut [u8], size: (usize, usize), area: u64, value: u8) -> bool {
    let (runs, labels, sizes) = components(mask, size, value);
    let small: Vec<bool> = sizes.iter().map(|&s| s < area).collect();
    if !small.contains(&true) {
        return false;
    }
    let mut flip = small;
    if value == 1 && flip.iter().all(|&f| f) {
        // np.argmax: the first of the largest, regions numbered in raster order as OpenCV's.
        let largest = (0..sizes.len()).fold(0, |b, k| if sizes[k] > sizes[b] { k } else { b });
        flip[largest] = false;
    }
    let w = size.1;
    for (run, &label) in runs.iter().zip(&labels) {
        if flip[label as usize] {
            mask[run[0] * w + run[1]..run[0] * w + run[2]].fill(1 - value);
        }
    }
    true
}

/// 8-connected components of the pixels equal to `value`, as runs `[row, start, end)`: each run's
/// component (numbered by first pixel in raster order, as OpenCV numbers them) and each
/// component's size.
fn components(
    mask: &[u8],
    (h, w): (usize, usize),
    value: u8,
) -> (Vec<[usize; 3]>, Vec<u32>, Vec<u64>) {
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut runs: Vec<[usize; 3]> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    let mut previous = 0..0;
    for (y, row) in mask.chunks_exact(w).enumerate().take(h) {
        let first = runs.len();
        let mut p = previous.start;
        let mut x = 0;
        while x < w {
            if row[x] != value {
                x += 1;
                continue;
            }
            let start = x;
            while x < w && row[x] == value {
                x += 1;
            }
            let me = runs.len();
            runs.push([y, start, x]);
            parent.push(me);
            // Runs of the row above touching [start - 1, x] (diagonals included).
            while p < previous.end && runs[p][2] < start {
                p += 1;
            }
            let mut q = p;
            while q < previous.end && runs[q][1] <= x {
                let (a, b) = (find(&mut parent, q), find(&mut parent, me));
                // The smaller index is the root: a component's root is its first run.
                parent[a.max(b)] = a.min(b);
                q += 1;
            }
        }
        previous = first..runs.len();
    }
    let mut label_of_root = vec![u32::MAX; runs.len()];
    let mut sizes = Vec::new();
    let mut labels = Vec::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        let root = find(&mut parent, i);
        if label_of_root[root] == u32::MAX {
            label_of_root[root] = sizes.len() as u32;
            sizes.push(0u64);
        }
        let label = label_of_root[root];
        sizes[label as usize] += (run[2] - run[1]) as u64;
        labels.push(label);
    }
    (runs, labels, sizes)
}

/// The pixels of a crop of an RGB image `[h, w, 3]` (the image itself for the whole-image crop).
pub fn crop_rgb(rgb: &[u8], (h, w): (usize, usize), c: CropBox) -> Cow<'_, [u8]> {
    if c == [0, 0, w, h] {
        return Cow::Borrowed(rgb);
    }
    Cow::Owned(
        (c[1]..c[3])
            .flat_map(|y| &rgb[(y * w + c[0]) * 3..(y * w + c[2]) * 3])
            .copied()
            .collect(),
    )
}

/// A SAM proposal model: its manifest and two graphs.
pub struct SamModel {
    pub dir: PathBuf,
    pub manifest: SamManifest,
    encoder: Graph,
    decoder: Graph,
}

/// An image's embeddings and the frames its masks come back through.
pub struct SamImage {
    pub embeddings: Vec<f32>,
    pub input_size: (usize, usize),
    pub original: (usize, usize),
    /// Time inside ONNX Runtime.
    pub session_ms: f64,
}

impl SamModel {
    pub fn load(dir: &Path, options: SessionOptions) -> Result<Self> {
        crate::model::check_session_options(options.threads)?;
        let manifest_path = crate::files::resolve(dir, SAM_MANIFEST_FILE, "the SAM manifest")?;
        let text = crate::files::read_capped(
            &manifest_path,
            crate::files::MANIFEST_MAX_BYTES,
            "SAM manifest",
            ErrorCode::ManifestInvalid,
        )?;
        let manifest = SamManifest::parse(&text)?;
        let (s, c, g, m) = (
            manifest.image_size,
            manifest.embedding.channels,
            manifest.embedding.grid,
            manifest.mask_size,
        );
        let f32_port = |name, dims| Port {
            name,
            ty: ort::value::TensorElementType::Float32,
            dims,
        };
        let encoder = Graph::load(
            &crate::files::resolve(dir, &manifest.graphs.image_encoder, "graphs.imageEncoder")?,
            options,
            &[f32_port(
                "image",
                vec![Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
            )],
            &[f32_port(
                "image_embeddings",
                vec![Dim::Fixed(1), Dim::Fixed(c), Dim::Fixed(g), Dim::Fixed(g)],
            )],
        )?;
        let decoder = Graph::load(
            &crate::files::resolve(dir, &manifest.graphs.mask_decoder, "graphs.maskDecoder")?,
            options,
            &[
                f32_port(
                    "image_embeddings",
                    vec![Dim::Fixed(1), Dim::Fixed(c), Dim::Fixed(g), Dim::Fixed(g)],
                ),
                f32_port(
                    "point_coords",
                    vec![Dim::Dynamic, Dim::Dynamic, Dim::Fixed(2)],
                ),
                f32_port("point_labels", vec![Dim::Dynamic, Dim::Dynamic]),
            ],
            &[
                f32_port("iou_predictions", vec![Dim::Dynamic, Dim::Fixed(3)]),
                f32_port(
                    "low_res_masks",
                    vec![Dim::Dynamic, Dim::Fixed(3), Dim::Fixed(m), Dim::Fixed(m)],
                ),
            ],
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            encoder,
            decoder,
        })
    }

    /// The frames a crop's masks come back through: the resized crop's size, the crop, the image's size.
    pub fn frames(
        &self,
        input_size: (usize, usize),
        crop: CropBox,
        image: (usize, usize),
    ) -> Frames {
        Frames {
            mask_size: self.manifest.mask_size,
            image_size: self.manifest.image_size,
            input_size,
            original: (crop[3] - crop[1], crop[2] - crop[0]),
            crop,
            image,
            mask_threshold: self.manifest.mask_threshold,
        }
    }

    /// SamPredictor's `set_image` input: `[3, S, S]`, and the resized image's size inside it.
    pub fn preprocess(
        &self,
        rgb: &[u8],
        (h, w): (usize, usize),
    ) -> Result<(Vec<f32>, (usize, usize))> {
        let s = self.manifest.image_size;
        let (ih, iw) = preprocess_shape(h, w, s);
        let resized = resize_rgb(rgb, (h, w), (ih, iw))?;
        let mut input = vec![0f32; 3 * s * s];
        let (mean, std) = (self.manifest.pixel_mean, self.manifest.pixel_std);
        for (i, px) in resized.chunks_exact(3).enumerate() {
            let (y, x) = (i / iw, i % iw);
            for c in 0..3 {
                input[(c * s + y) * s + x] = (f32::from(px[c]) - mean[c]) / std[c];
            }
        }
        Ok((input, (ih, iw)))
    }

    /// The image encoder on an RGB image `[h, w, 3]`.
    pub fn embed(&self, rgb: &[u8], (h, w): (usize, usize)) -> Result<SamImage> {
        let s = self.manifest.image_size;
        let (input, input_size) = self.preprocess(rgb, (h, w))?;
        let mut run = self.encoder.run(ort::inputs![
            "image" => TensorRef::from_array_view(([1, 3, s, s], input.as_slice()))?,
        ])?;
        let (_, embeddings) = run.tensors.pop().expect("one output");
        Ok(SamImage {
            embeddings,
            input_size,
            original: (h, w),
            session_ms: run.session_ms,
        })
    }

    /// The decoder on one batch of single-point prompts (image pixels), each with SAM's padding point:
    /// `[points, 3, m, m]` logits, `[points, 3]` IoUs, the time inside ONNX Runtime.
    pub fn decode_points(
        &self,
        embedded: &SamImage,
        points: &[[f64; 2]],
    ) -> Result<(Vec<f32>, Vec<f32>, f64)> {
        let (c, g) = (
            self.manifest.embedding.channels,
            self.manifest.embedding.grid,
        );
        let (h, w) = embedded.original;
        let (ih, iw) = embedded.input_size;
        let mut coords = Vec::with_capacity(points.len() * 4);
        let mut labels = Vec::with_capacity(points.len() * 2);
        for p in points {
            // SAM's ResizeLongestSide.apply_coords, in f64 as numpy computes it.
            coords.extend([
                (p[0] * (iw as f64 / w as f64)) as f32,
                (p[1] * (ih as f64 / h as f64)) as f32,
                0.0,
                0.0,
            ]);
            labels.extend([1.0f32, -1.0]);
        }
        let b = points.len();
        let mut run = self.decoder.run(ort::inputs![
            "image_embeddings" => TensorRef::from_array_view(([1, c, g, g], embedded.embeddings.as_slice()))?,
            "point_coords" => TensorRef::from_array_view(([b, 2, 2], coords.as_slice()))?,
            "point_labels" => TensorRef::from_array_view(([b, 2], labels.as_slice()))?,
        ])?;
        let (_, low_res) = run.tensors.pop().expect("two outputs");
        let (_, iou) = run.tensors.pop().expect("two outputs");
        Ok((low_res, iou, run.session_ms))
    }

    /// Automatic mask generation on an RGB image `[h, w, 3]`.
    pub fn generate(
        &self,
        rgb: &[u8],
        (h, w): (usize, usize),
        o: &AmgOptions,
    ) -> Result<(Vec<SamMask>, f64)> {
        o.check()?;
        let crops = crop_boxes((h, w), o.crop_n_layers, o.crop_overlap_ratio);
        if crops.iter().any(|(c, _)| c[2] <= c[0] || c[3] <= c[1]) {
            bail!(
                InvalidArgument,
                "A {w}x{h} image is too small for {} crop layers (`cropNLayers`)",
                o.crop_n_layers
            );
        }
        let mut session_ms = 0.0;
        let mut set = MaskSet::new((h, w));
        for &(crop, layer) in &crops {
            crate::cancel::check()?;
            let size = (crop[3] - crop[1], crop[2] - crop[0]);
            let embedded = self.embed(&crop_rgb(rgb, (h, w), crop), size)?;
            session_ms += embedded.session_ms;
            let frames = self.frames(embedded.input_size, crop, (h, w));
            let points = image_points(o.points_per_side_on(layer), size);
            let mut candidates = Vec::new();
            for batch in points.chunks(o.points_per_batch) {
                crate::cancel::check()?;
                let (low_res, iou, ms) = self.decode_points(&embedded, batch)?;
                session_ms += ms;
                candidates.extend(process_batch(
                    &DecodedBatch {
                        low_res: &low_res,
                        iou: &iou,
                        points: batch,
                    },
                    &frames,
                    o,
                ));
            }
            set.add_crop(crop, candidates, o);
        }
        Ok((set.finish(o), session_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_and_shapes_follow_segment_anything() {
        let g = point_grid(4);
        assert_eq!(g.len(), 16);
        assert_eq!(g[0], [0.125, 0.125]);
        assert_eq!(g[1], [0.375, 0.125]); // x varies fastest
        assert_eq!(g[15], [0.875, 0.875]);
        assert_eq!(point_grid(1), vec![[0.5, 0.5]]);
        assert_eq!(preprocess_shape(480, 640, 1024), (768, 1024));
        assert_eq!(preprocess_shape(61, 97, 256), (161, 256));
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 10.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 0.0, 0.0],
        ];
        assert_eq!(nms(&boxes, &[0.5, 0.9, 0.7, 0.8], 0.7), vec![1, 3, 2]);
        // A zero-area box has IoU 0/0 with itself: never suppressed, as in torchvision.
        assert_eq!(nms(&[[0.0; 4], [0.0; 4]], &[0.2, 0.1], 0.5), vec![0, 1]);
        assert_eq!(mask_box(&[0, 0, 0, 0, 1, 1, 0, 0, 0], (3, 3)), [1, 1, 2, 1]);
        assert_eq!(mask_box(&[0; 9], (3, 3)), [0; 4]);
    }

    #[test]
    fn scoring_counts_and_packs_as_the_plain_loop() {
        // An unaligned width, so that rows straddle the 64-bit words.
        let (h, w) = (5, 70);
        let values: Vec<f32> = (0..h * w)
            .map(|i| ((i * 7919) % 23) as f32 - 11.0)
            .collect();
        let mut s = Scoring::new((h, w), 0.5, 3.0);
        for (y, row) in values.chunks_exact(w).enumerate() {
            s.row(y, row);
        }
        let mask: Vec<u8> = values.iter().map(|&v| u8::from(v > 0.5)).collect();
        assert_eq!(s.intersections, values.iter().filter(|&&v| v > 3.5).count());
        assert_eq!(s.unions, values.iter().filter(|&&v| v > -2.5).count());
        assert_eq!(s.area, mask.iter().map(|&v| u64::from(v)).sum::<u64>());
        assert_eq!(s.bbox(), mask_box(&mask, (h, w)));
        let unpacked: Vec<u8> = (0..h * w)
            .map(|i| ((s.bits[i / 64] >> (i % 64)) & 1) as u8)
            .collect();
        assert_eq!(unpacked, mask);
    }

    #[test]
    fn crops_follow_segment_anything() {
        // generate_crop_boxes((480, 640), 2, 512 / 1500) and ((61, 97), 1, ...).
        let c = crop_boxes((480, 640), 2, 512.0 / 1500.0);
        assert_eq!(c.len(), 21);
        assert_eq!(c[0], ([0, 0, 640, 480], 0));
        assert_eq!(c[1], ([0, 0, 402, 322], 1));
        assert_eq!(c[2], ([0, 159, 402, 480], 1));
        assert_eq!(c[5], ([0, 0, 221, 181], 2));
        assert_eq!(c[20], ([420, 300, 640, 480], 2));
        let boxes: Vec<CropBox> = crop_boxes((61, 97), 1, 512.0 / 1500.0)
            .into_iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(
            boxes,
            [
                [0, 0, 97, 61],
                [0, 0, 59, 41],
                [0, 21, 59, 61],
                [39, 0, 97, 41],
                [39, 21, 97, 61]
            ]
        );
    }

    #[test]
    fn small_regions_follow_segment_anything() {
        // remove_small_regions on the same mask (segment-anything with OpenCV).
        #[rustfmt::skip]
        let m: [u8; 24] = [
            1, 1, 1, 0, 0, 0,
            1, 0, 1, 0, 1, 0,
            1, 1, 1, 0, 0, 0,
            0, 0, 0, 0, 0, 1,
        ];
        let mut holes = m;
        assert!(remove_small_regions(&mut holes, (4, 6), 2, 0));
        assert_eq!(holes[7], 1);
        assert_eq!(holes.iter().filter(|&&v| v == 1).count(), 11);
        let mut islands = m;
        assert!(remove_small_regions(&mut islands, (4, 6), 2, 1));
        assert_eq!((islands[10], islands[23]), (0, 0));
        assert_eq!(islands.iter().filter(|&&v| v == 1).count(), 8);
        // Every island small: the largest (the ring) stays.
        let mut largest = m;
        assert!(remove_small_regions(&mut largest, (4, 6), 100, 1));
        assert_eq!(largest, islands);
        let mut unchanged = m;
        assert!(!remove_small_regions(&mut unchanged, (4, 6), 1, 1));
        assert_eq!(unchanged, m);
        // Diagonal neighbours are one region (8-connectivity).
        let (_, _, sizes) = components(&[1, 0, 0, 1], (2, 2), 1);
        assert_eq!(sizes, [2]);
        let (_, _, sizes) = components(&[1, 0, 0, 0, 0, 1], (2, 3), 1);
        assert_eq!(sizes, [1, 1]);
    }

    #[test]
    fn manifests_are_checked() {
        let good = r#"{"format":"ovseg-sam","version":1,"name":"t","imageSize":256,"embedding":{"channels":256,"grid":16},"maskSize":64,"pixelMean":[1,2,3],"pixelStd":[1,1,1],"maskThreshold":0,"graphs":{"imageEncoder":"a.onnx","maskDecoder":"b.onnx"},"geometry":{}}"#;
        assert!(SamManifest::parse(good.as_bytes()).is_ok());
        for (from, to, code) in [
            ("\"version\":1", "\"version\":2", ErrorCode::ManifestVersion),
            (
                "\"maskSize\":64",
                "\"maskSize\":65",
                ErrorCode::ManifestInvalid,
            ),
            (
                "\"pixelStd\":[1,1,1]",
                "\"pixelStd\":[1,0,1]",
                ErrorCode::ManifestInvalid,
            ),
            (
                "\"format\":\"ovseg-sam\"",
                "\"format\":\"ovseg-model\"",
                ErrorCode::ManifestInvalid,
            ),
            (
                "\"name\":\"t\"",
                "\"name\":\"t\",\"extra\":1",
                ErrorCode::ManifestInvalid,
            ),
        ] {
            let err = SamManifest::parse(good.replace(from, to).as_bytes()).unwrap_err();
            assert_eq!(err.code, code, "{to}");
        }
    }
}
