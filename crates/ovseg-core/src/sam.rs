//! Segment Anything's automatic mask generator over a SAM proposal-model directory
//! (docs/model-format.md, "SAM proposal models"), with the semantics of segment-anything's
//! `SamAutomaticMaskGenerator` for one crop layer (the whole image) and no small-region removal:
//!
//! 1. the image's longest side resized to the model's size (PIL's bilinear, `resize_rgb`),
//!    normalized, zero-padded; the image encoder once;
//! 2. a regular grid of points (`points_per_side`^2, cell centres), one prompt each, decoded in
//!    batches of `points_per_batch`, three masks per point;
//! 3. per mask: the low-resolution logits upscaled as SAM's `postprocess_masks` does (bilinear to
//!    the padded size, cropped to the resized image, bilinear to the image), kept when the
//!    predicted IoU is above `pred_iou_thresh` and the stability score (the area above
//!    threshold + offset over the area above threshold − offset) at least
//!    `stability_score_thresh`; thresholded to a binary mask and its box;
//! 4. box non-maximum suppression over all kept masks by predicted IoU (torchvision's `nms`).
//!
//! `tests/parity_sam.rs` checks each step against the reference package.

use std::path::{Path, PathBuf};

use ort::value::TensorRef;
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{bail, ErrorCode, Result};
use crate::graph::{Dim, Graph, Port, SessionOptions};
use crate::resample::{bilinear_resize, bilinear_resize_window, resize_rgb};

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
}

/// Limits of `AmgOptions` (a point grid of at most 256 x 256, batches of at most 4096 prompts).
pub const MAX_POINTS_PER_SIDE: usize = 256;
pub const MAX_POINTS_PER_BATCH: usize = 4096;

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
        Ok(())
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
    /// The resized image inside it.
    pub input_size: (usize, usize),
    /// The image.
    pub original: (usize, usize),
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

/// segment-anything's `_process_batch` for the whole image: the masks of one batch that pass the
/// IoU and stability filters, binary, with their boxes.
pub fn process_batch(batch: &DecodedBatch, frames: &Frames, o: &AmgOptions) -> Vec<Candidate> {
    let m = frames.mask_size;
    let (h, w) = frames.original;
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
            // SAM's postprocess_masks: bilinear to the padded size (only the resized image's
            // window is needed), then bilinear to the image.
            let window = bilinear_resize_window(
                logits,
                1,
                (m, m),
                (frames.image_size, frames.image_size),
                frames.input_size,
                |v| v,
            );
            let full = bilinear_resize(&window, 1, frames.input_size, (h, w));
            let t = frames.mask_threshold;
            let (high, low) = (t + o.stability_score_offset, t - o.stability_score_offset);
            let intersections = full.iter().filter(|&&v| v > high).count();
            let unions = full.iter().filter(|&&v| v > low).count();
            let stability = intersections as f32 / unions as f32;
            // A NaN score (an empty union) fails the test, as in the reference.
            let stable = stability >= o.stability_score_thresh;
            if o.stability_score_thresh > 0.0 && !stable {
                return None;
            }
            let mask: Vec<u8> = full.iter().map(|&v| u8::from(v > t)).collect();
            let mut bits = vec![0u64; mask.len().div_ceil(64)];
            for (i, _) in mask.iter().enumerate().filter(|(_, &v)| v != 0) {
                bits[i / 64] |= 1 << (i % 64);
            }
            Some(Candidate {
                bbox: mask_box(&mask, (h, w)),
                area: mask.iter().map(|&v| u64::from(v)).sum(),
                bits,
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

/// The masks that survive box NMS by predicted IoU, in its order (highest first), as bytes of
/// `pixels` (the image's height x width).
pub fn suppress(candidates: Vec<Candidate>, threshold: f32, pixels: usize) -> Vec<SamMask> {
    let boxes: Vec<[f32; 4]> = candidates
        .iter()
        .map(|c| c.bbox.map(|v| v as f32))
        .collect();
    let scores: Vec<f32> = candidates.iter().map(|c| c.predicted_iou).collect();
    let keep = nms(&boxes, &scores, threshold);
    let mut slots: Vec<Option<Candidate>> = candidates.into_iter().map(Some).collect();
    keep.into_iter()
        .map(|i| {
            slots[i]
                .take()
                .expect("nms keeps an index once")
                .into_mask(pixels)
        })
        .collect()
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

    /// The frames an image's masks come back through: the resized image's size, and the image's.
    pub fn frames(&self, input_size: (usize, usize), original: (usize, usize)) -> Frames {
        Frames {
            mask_size: self.manifest.mask_size,
            image_size: self.manifest.image_size,
            input_size,
            original,
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

        let embedded = self.embed(rgb, (h, w))?;
        let mut session_ms = embedded.session_ms;
        let frames = self.frames(embedded.input_size, (h, w));
        let points = image_points(o.points_per_side, (h, w));
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
        Ok((suppress(candidates, o.box_nms_thresh, h * w), session_ms))
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
