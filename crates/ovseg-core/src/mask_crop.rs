//! OVSeg's mask cropping (../shared/docs/ovseg-reference.md, section 1 step 4): per soft mask,
//! binarize (`> threshold`), take the tight box, blend the box of the image with CLIP's mean
//! colour outside the mask, normalize (background becomes exactly 0), stretch to the encoder's
//! input size with PyTorch's bicubic semantics, and resize the binary mask with PyTorch's legacy
//! nearest. Queries run in parallel; the only allocations are per query, never per pixel.

use rayon::prelude::*;

use crate::error::{bail, Result};

#[derive(Debug, Clone, Copy)]
pub struct CropOptions {
    /// A pixel is foreground when its soft mask value is strictly greater.
    pub threshold: f32,
    /// Output side (the encoder's input size).
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Crops of the valid queries, in query order.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskCrops {
    /// Per query: `[x0, y0, x1, y1]` (x1, y1 exclusive) when at least one pixel passes the threshold.
    pub boxes: Vec<Option<[usize; 4]>>,
    /// `[valid, 3, size, size]` normalized pixels.
    pub pixels: Vec<f32>,
    /// `[valid, size, size]` binary masks (0 / 1).
    pub masks: Vec<u8>,
}

impl MaskCrops {
    pub fn valid_count(&self) -> usize {
        self.boxes.iter().flatten().count()
    }
}

/// `image`: `[height, width, 3]` RGB bytes; `soft_masks`: `[queries, height, width]`.
pub fn crop_masks(
    image: &[u8],
    height: usize,
    width: usize,
    soft_masks: &[f32],
    options: &CropOptions,
) -> Result<MaskCrops> {
    let plane = height * width;
    if plane == 0 || image.len() != plane * 3 {
        bail!(
            InvalidImage,
            "expected {height}x{width}x3 RGB bytes ({} values), got {}",
            plane * 3,
            image.len()
        );
    }
    if soft_masks.is_empty() || !soft_masks.len().is_multiple_of(plane) {
        bail!(
            InvalidMask,
            "mask data of {} values is not a whole number of {height}x{width} masks",
            soft_masks.len()
        );
    }
    if !options.threshold.is_finite() || options.size == 0 {
        bail!(
            InvalidArgument,
            "threshold must be finite and size positive"
        );
    }
    let scans: Vec<BoxScan> = soft_masks
        .par_chunks_exact(plane)
        .map(|m| tight_box(m, width, options.threshold))
        .collect();
    if let Some(q) = scans.iter().position(|scan| scan.has_nan) {
        bail!(InvalidMask, "mask {q} contains NaN");
    }
    let boxes: Vec<Option<[usize; 4]>> = scans.into_iter().map(|scan| scan.bbox).collect();
    let valid: Vec<(usize, [usize; 4])> = boxes
        .iter()
        .enumerate()
        .filter_map(|(q, b)| b.map(|b| (q, b)))
        .collect();
    let s = options.size;
    let mut pixels = vec![0f32; valid.len() * 3 * s * s];
    let mut masks = vec![0u8; valid.len() * s * s];
    pixels
        .par_chunks_exact_mut(3 * s * s)
        .zip(masks.par_chunks_exact_mut(s * s))
        .zip(valid.par_iter())
        .for_each_init(
            Scratch::default,
            |scratch, ((out_pixels, out_mask), &(q, bbox))| {
                let mask = &soft_masks[q * plane..][..plane];
                crop_one(
                    image, width, mask, bbox, options, scratch, out_pixels, out_mask,
                );
            },
        );
    Ok(MaskCrops {
        boxes,
        pixels,
        masks,
    })
}

struct BoxScan {
    bbox: Option<[usize; 4]>,
    has_nan: bool,
}

/// The tight box of `mask > threshold`, and whether the mask holds a NaN (one pass over the mask).
fn tight_box(mask: &[f32], width: usize, threshold: f32) -> BoxScan {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    let mut has_nan = false;
    for (y, row) in mask.chunks_exact(width).enumerate() {
        // A branch-free fold (vectorizes); NaN compares false below, so it never counts as foreground.
        has_nan |= row.iter().fold(false, |nan, v| nan | v.is_nan());
        let Some(first) = row.iter().position(|&v| v > threshold) else {
            continue;
        };
        let last = row.iter().rposition(|&v| v > threshold).unwrap_or(first);
        x0 = x0.min(first);
        x1 = x1.max(last + 1);
        y0 = y0.min(y);
        y1 = y + 1;
    }
    BoxScan {
        bbox: (x0 != usize::MAX).then_some([x0, y0, x1, y1]),
        has_nan,
    }
}

/// Per-worker buffers reused across queries: crops can be megabytes, and fresh allocations of
/// that size are new pages to fault in and zero for every query.
#[derive(Default)]
struct Scratch {
    crop: Vec<f32>,
    binary: Vec<u8>,
    horizontal: Vec<f32>,
}

#[allow(clippy::too_many_arguments)] // one query's inputs, options, scratch and two outputs
fn crop_one(
    image: &[u8],
    width: usize,
    mask: &[f32],
    [x0, y0, x1, y1]: [usize; 4],
    o: &CropOptions,
    scratch: &mut Scratch,
    out_pixels: &mut [f32],
    out_mask: &mut [u8],
) {
    let (cw, ch, s) = (x1 - x0, y1 - y0, o.size);
    // Blend and normalize at crop resolution: foreground (x - mean*255) / (std*255); the background
    // is the fill colour mean*255, which normalizes to exactly 0 (the zeroed buffer).
    let Scratch {
        crop,
        binary,
        horizontal,
    } = scratch;
    crop.clear();
    crop.resize(3 * ch * cw, 0.0);
    binary.clear();
    binary.resize(ch * cw, 0);
    let fill = o.mean.map(|m| m * 255.0);
    let inv_std = o.std.map(|sd| 1.0 / (sd * 255.0));
    for y in 0..ch {
        for x in 0..cw {
            let src = (y0 + y) * width + x0 + x;
            if mask[src] > o.threshold {
                binary[y * cw + x] = 1;
                for c in 0..3 {
                    // m = 1: the blend `px * m + fill * (1 - m)` is the pixel itself.
                    crop[(c * ch + y) * cw + x] =
                        (f32::from(image[src * 3 + c]) - fill[c]) * inv_std[c];
                }
            }
        }
    }
    bicubic_resize(crop, 3, (ch, cw), (s, s), horizontal, out_pixels);
    let rows = nearest_indices(ch, s);
    let cols = nearest_indices(cw, s);
    for (y, &sy) in rows.iter().enumerate() {
        for (x, &sx) in cols.iter().enumerate() {
            out_mask[y * s + x] = binary[sy * cw + sx];
        }
    }
}

/// PyTorch's legacy nearest (`F.interpolate(mode='nearest')`): `min(floor(dst * (in / out)), in - 1)` in f32.
pub fn nearest_indices(input: usize, output: usize) -> Vec<usize> {
    if input == output {
        return (0..output).collect();
    }
    if output == 2 * input {
        return (0..output).map(|i| i >> 1).collect();
    }
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| ((i as f32 * scale).floor() as usize).min(input - 1))
        .collect()
}

/// Cubic convolution weights (A = -0.75) and the first source tap's neighbour (`base`) for each output index, with
/// PyTorch's half-pixel mapping `src = (dst + 0.5) * (in / out) - 0.5` (align_corners=False).
/// As PyTorch's CPU kernel does: the scale is rounded to f32, the source index and its fraction
/// are computed in f64 (an f32 index loses ~3e-5 at index 500, visible as 1e-4 in the output).
fn cubic_taps(input: usize, output: usize) -> Vec<(isize, [f32; 4])> {
    const A: f64 = -0.75;
    let scale = f64::from(input as f32 / output as f32);
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    (0..output)
        .map(|dst| {
            let real = scale * (dst as f64 + 0.5) - 0.5;
            let base = real.floor();
            let t = real - base;
            // Taps are base-1 ..= base+2, clamped to the input by the caller.
            (
                base as isize,
                [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)].map(|w| w as f32),
            )
        })
        .collect()
}

/// `F.interpolate(x, (out_h, out_w), mode='bicubic', align_corners=False)` of `[channels, in_h, in_w]`
/// (no antialias, no clamping), separably: rows first, then columns. `horizontal` is scratch space.
pub fn bicubic_resize(
    input: &[f32],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    horizontal: &mut Vec<f32>,
    out: &mut [f32],
) {
    let cols = cubic_taps(in_w, out_w);
    let clamp_row = |i: isize| i.clamp(0, in_h as isize - 1) as usize;
    let rows: Vec<([usize; 4], [f32; 4])> = cubic_taps(in_h, out_h)
        .into_iter()
        .map(|(b, w)| ([b - 1, b, b + 1, b + 2].map(clamp_row), w))
        .collect();
    // base >= -1 and base + 2 <= in_w + 1, so with two copies of each edge pixel on both sides
    // every horizontal window is 4 contiguous values: no clamping or bounds checks per tap.
    let mut padded = vec![0f32; in_w + 4];
    horizontal.resize(in_h * out_w, 0.0);
    for c in 0..channels {
        let plane = &input[c * in_h * in_w..][..in_h * in_w];
        for (src_row, dst_row) in plane
            .chunks_exact(in_w)
            .zip(horizontal.chunks_exact_mut(out_w))
        {
            padded[2..in_w + 2].copy_from_slice(src_row);
            padded[..2].fill(src_row[0]);
            padded[in_w + 2..].fill(src_row[in_w - 1]);
            for (dst, &(base, w)) in dst_row.iter_mut().zip(&cols) {
                let p: &[f32; 4] = padded[(base + 1) as usize..][..4]
                    .try_into()
                    .expect("4 taps");
                *dst = p[0] * w[0] + p[1] * w[1] + p[2] * w[2] + p[3] * w[3];
            }
        }
        let out_plane = &mut out[c * out_h * out_w..][..out_h * out_w];
        for (dst_row, (taps, w)) in out_plane.chunks_exact_mut(out_w).zip(&rows) {
            let r = taps.map(|t| &horizontal[t * out_w..][..out_w]);
            for (x, dst) in dst_row.iter_mut().enumerate() {
                *dst = r[0][x] * w[0] + r[1][x] * w[1] + r[2][x] * w[2] + r[3][x] * w[3];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn options() -> CropOptions {
        CropOptions {
            threshold: 0.4,
            size: 4,
            mean: [0.5, 0.5, 0.5],
            std: [0.25, 0.25, 0.25],
        }
    }

    #[test]
    fn boxes_are_tight_and_threshold_strict() {
        let mut m = vec![0f32; 6 * 5];
        m[5 + 2] = 0.9; // (x=2, y=1)
        m[3 * 5 + 4] = 0.41; // (x=4, y=3)
        m[4 * 5] = 0.4; // not foreground: strict >
        assert_eq!(tight_box(&m, 5, 0.4).bbox, Some([2, 1, 5, 4]));
        assert_eq!(tight_box(&[0.4f32; 30], 5, 0.4).bbox, None);
    }

    #[test]
    fn nearest_matches_pytorch_legacy() {
        // torch.nn.functional.interpolate(torch.arange(5.)[None,None,None], size=(1,3), mode='nearest') -> 0, 1, 3
        assert_eq!(nearest_indices(5, 3), vec![0, 1, 3]);
        assert_eq!(nearest_indices(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(nearest_indices(3, 7), vec![0, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn bicubic_of_a_constant_is_the_constant_and_weights_sum_to_one() {
        let mut out = vec![0f32; 7 * 5];
        bicubic_resize(
            &[2.5f32; 3 * 4],
            1,
            (3, 4),
            (7, 5),
            &mut Vec::new(),
            &mut out,
        );
        assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-5));
        for (_, w) in cubic_taps(13, 224) {
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn background_is_exactly_zero_and_invalid_queries_are_skipped() {
        let image = vec![200u8; 4 * 4 * 3];
        let mut masks = vec![0f32; 2 * 16];
        masks[16 + 5] = 1.0; // query 1: one pixel at (1, 1)
        let crops = crop_masks(&image, 4, 4, &masks, &options()).unwrap();
        assert_eq!(crops.boxes, vec![None, Some([1, 1, 2, 2])]);
        assert_eq!(crops.valid_count(), 1);
        assert_eq!(crops.masks, vec![1u8; 16]);
        let expected = (200.0 - 127.5) / 63.75;
        assert!(crops.pixels.iter().all(|v| (v - expected).abs() < 1e-5));
    }

    #[test]
    fn bad_inputs_are_coded() {
        let o = options();
        assert_eq!(
            crop_masks(&[0; 5], 2, 2, &[0.0; 4], &o).unwrap_err().code,
            ErrorCode::InvalidImage
        );
        assert_eq!(
            crop_masks(&[0; 12], 2, 2, &[0.0; 5], &o).unwrap_err().code,
            ErrorCode::InvalidMask
        );
        assert_eq!(
            crop_masks(&[0; 12], 2, 2, &[0.0, f32::NAN, 0.0, 0.0], &o)
                .unwrap_err()
                .code,
            ErrorCode::InvalidMask
        );
        assert_eq!(
            crop_masks(&[], 0, 2, &[], &o).unwrap_err().code,
            ErrorCode::InvalidImage
        );
    }
}
