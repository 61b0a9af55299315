//! OVSeg's mask cropping (docs/ovseg.md, section 1 step 4): per soft mask,
//! binarize (`> threshold`), take the tight box, blend the box of the image with CLIP's mean
//! colour outside the mask, normalize (background becomes exactly 0), stretch to the encoder's
//! input size with PyTorch's bicubic semantics, and resize the binary mask with PyTorch's legacy
//! nearest. Queries run in parallel; the only allocations are per call and per worker, never per
//! pixel.

use rayon::prelude::*;

use crate::error::{bail, Result};
use crate::image_encoder::normalize_rgb8;

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
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MaskCrops {
    /// Per query: `[x0, y0, x1, y1]` (x1, y1 exclusive) when at least one pixel passes the threshold.
    pub boxes: Vec<Option<[usize; 4]>>,
    /// Per query: pixels that pass the threshold.
    pub areas: Vec<usize>,
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
    let mut crops = MaskCrops::default();
    crop_masks_into(image, height, width, soft_masks, options, &mut crops)?;
    Ok(crops)
}

/// `crop_masks` into `out`, reusing its buffers: a fresh 100-crop output is 60 MB of new pages to
/// fault in on every call (docs/benchmarks.md measures it), a reused one is already resident.
/// Every element of the used length is overwritten, so the buffers are not cleared.
pub fn crop_masks_into(
    image: &[u8],
    height: usize,
    width: usize,
    soft_masks: &[f32],
    options: &CropOptions,
    out: &mut MaskCrops,
) -> Result<()> {
    let plane = height * width;
    if plane == 0 || image.len() != plane * 3 {
        bail!(
            InvalidImage,
            "expected {height}x{width}x3 RGB bytes ({} values), got {}",
            plane * 3,
            image.len()
        );
    }
    // No masks (SAM found none) is an empty result; a partial mask is an error.
    if !soft_masks.len().is_multiple_of(plane) {
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
    out.boxes.clear();
    out.boxes.extend(scans.iter().map(|scan| scan.bbox));
    out.areas.clear();
    out.areas.extend(scans.iter().map(|scan| scan.area));
    let valid: Vec<(usize, [usize; 4])> = out
        .boxes
        .iter()
        .enumerate()
        .filter_map(|(q, b)| b.map(|b| (q, b)))
        .collect();
    // The whole image once per call: each query then selects from these planes instead of
    // converting its own crop's pixels.
    let normalized = normalize_rgb8(image, plane, options.mean, options.std);
    let s = options.size;
    // Only growing writes zeros; every element up to the new length is overwritten below.
    out.pixels.resize(valid.len() * 3 * s * s, 0.0);
    out.masks.resize(valid.len() * s * s, 0);
    out.pixels
        .par_chunks_exact_mut(3 * s * s)
        .zip(out.masks.par_chunks_exact_mut(s * s))
        .zip(valid.par_iter())
        .for_each_init(
            Scratch::default,
            |scratch, ((out_pixels, out_mask), &(q, bbox))| {
                let query = Query {
                    normalized: &normalized,
                    width,
                    mask: &soft_masks[q * plane..][..plane],
                    bbox,
                };
                crop_one(&query, options, scratch, out_pixels, out_mask);
            },
        );
    Ok(())
}

struct BoxScan {
    bbox: Option<[usize; 4]>,
    area: usize,
    has_nan: bool,
}

/// The tight box and area of `mask > threshold`, and whether the mask holds a NaN.
fn tight_box(mask: &[f32], width: usize, threshold: f32) -> BoxScan {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    let (mut has_nan, mut area) = (false, 0);
    for (y, row) in mask.chunks_exact(width).enumerate() {
        // One branch-free pass (it vectorizes); NaN compares false, so it never counts as foreground.
        let (nan, count) = row.iter().fold((false, 0u32), |(nan, count), &v| {
            (nan | v.is_nan(), count + u32::from(v > threshold))
        });
        has_nan |= nan;
        if count == 0 {
            continue;
        }
        area += count as usize;
        let first = row.iter().position(|&v| v > threshold).unwrap_or(0);
        let last = row.iter().rposition(|&v| v > threshold).unwrap_or(first);
        x0 = x0.min(first);
        x1 = x1.max(last + 1);
        y0 = y0.min(y);
        y1 = y + 1;
    }
    BoxScan {
        bbox: (x0 != usize::MAX).then_some([x0, y0, x1, y1]),
        area,
        has_nan,
    }
}

/// Per-worker buffers reused across queries: crops can be megabytes, and fresh allocations of
/// that size are new pages to fault in and zero for every query.
#[derive(Default)]
struct Scratch {
    crop: Vec<f32>,
    binary: Vec<u8>,
    between: Vec<f32>,
}

/// One valid query's inputs.
struct Query<'a> {
    /// `[3, height*width]` from `normalize_rgb8`.
    normalized: &'a [f32],
    width: usize,
    /// `[height*width]` soft mask.
    mask: &'a [f32],
    bbox: [usize; 4],
}

fn crop_one(
    q: &Query,
    o: &CropOptions,
    scratch: &mut Scratch,
    out_pixels: &mut [f32],
    out_mask: &mut [u8],
) {
    let [x0, y0, x1, y1] = q.bbox;
    let (cw, ch, s) = (x1 - x0, y1 - y0, o.size);
    let plane = q.normalized.len() / 3;
    let Scratch {
        crop,
        binary,
        between,
    } = scratch;
    crop.resize(3 * ch * cw, 0.0);
    binary.resize(ch * cw, 0);
    // Blend at crop resolution: `px * m + fill * (1 - m)` with binary m is the pixel where m = 1
    // and the fill colour mean*255 elsewhere, which normalizes to exactly 0.
    for y in 0..ch {
        let offset = (y0 + y) * q.width + x0;
        let keep = &mut binary[y * cw..][..cw];
        for (k, &m) in keep.iter_mut().zip(&q.mask[offset..][..cw]) {
            *k = u8::from(m > o.threshold);
        }
        for c in 0..3 {
            let src = &q.normalized[c * plane + offset..][..cw];
            let dst = &mut crop[(c * ch + y) * cw..][..cw];
            for ((d, &v), &k) in dst.iter_mut().zip(src).zip(keep.iter()) {
                *d = if k != 0 { v } else { 0.0 };
            }
        }
    }
    bicubic_resize(crop, 3, (ch, cw), (s, s), between, out_pixels);
    let rows = nearest_indices(ch, s);
    let cols = nearest_indices(cw, s);
    for (dst_row, &sy) in out_mask.chunks_exact_mut(s).zip(&rows) {
        let src_row = &binary[sy * cw..][..cw];
        for (dst, &sx) in dst_row.iter_mut().zip(&cols) {
            *dst = src_row[sx];
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

/// Cubic convolution weights (A = -0.75) and `base` (the taps are base-1 ..= base+2, clamped by the
/// caller) for each output index, with PyTorch's half-pixel mapping `src = (dst + 0.5) * (in / out) - 0.5`
/// (align_corners=False). As PyTorch's CPU kernel does: the scale is rounded to f32, the source
/// index and its fraction are computed in f64 (an f32 index loses ~3e-5 at index 500, visible as
/// 1e-4 in the output).
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
            (
                base as isize,
                [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)].map(|w| w as f32),
            )
        })
        .collect()
}

/// `F.interpolate(x, (out_h, out_w), mode='bicubic', align_corners=False)` of `[channels, in_h, in_w]`
/// (no antialias, no clamping), separably. The pass along columns gathers 4 taps per output; the
/// pass along rows runs over contiguous rows and vectorizes. So when the input is taller than the
/// output, rows are resized first (the gather pass then sees `out_h` rows, not `in_h`).
/// `between` is scratch space for the intermediate image.
pub fn bicubic_resize(
    input: &[f32],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    between: &mut Vec<f32>,
    out: &mut [f32],
) {
    let cols = cubic_taps(in_w, out_w);
    let rows = cubic_taps(in_h, out_h);
    let rows_first = in_h > out_h;
    let (mid_h, mid_w) = if rows_first {
        (out_h, in_w)
    } else {
        (in_h, out_w)
    };
    between.resize(mid_h * mid_w, 0.0);
    let mut padded = vec![0f32; in_w.max(mid_w) + 4];
    for c in 0..channels {
        let plane = &input[c * in_h * in_w..][..in_h * in_w];
        let out_plane = &mut out[c * out_h * out_w..][..out_h * out_w];
        if rows_first {
            resize_along_rows(plane, in_h, in_w, &rows, between);
            resize_along_columns(between, in_w, &cols, &mut padded, out_plane);
        } else {
            resize_along_columns(plane, in_w, &cols, &mut padded, between);
            resize_along_rows(between, in_h, out_w, &rows, out_plane);
        }
    }
}

/// `[h, width]` -> `[rows.len(), width]`: each output row a weighted sum of 4 (clamped) input rows.
fn resize_along_rows(
    input: &[f32],
    in_h: usize,
    width: usize,
    rows: &[(isize, [f32; 4])],
    out: &mut [f32],
) {
    let clamp = |i: isize| i.clamp(0, in_h as isize - 1) as usize;
    for (dst_row, &(base, w)) in out.chunks_exact_mut(width).zip(rows) {
        let [r0, r1, r2, r3] =
            [base - 1, base, base + 1, base + 2].map(|t| &input[clamp(t) * width..][..width]);
        // Zipped rows: no bounds checks, so this loop vectorizes.
        for ((((dst, &a), &b), &c), &d) in dst_row.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
            *dst = a * w[0] + b * w[1] + c * w[2] + d * w[3];
        }
    }
}

/// `[h, in_w]` -> `[h, cols.len()]`: each output value a weighted sum of 4 (clamped) neighbours.
fn resize_along_columns(
    input: &[f32],
    in_w: usize,
    cols: &[(isize, [f32; 4])],
    padded: &mut [f32],
    out: &mut [f32],
) {
    // base >= -1 and base + 2 <= in_w + 1, so with two copies of each edge value on both sides
    // every window is 4 contiguous values: no clamping or bounds checks per tap.
    let padded = &mut padded[..in_w + 4];
    for (src_row, dst_row) in input
        .chunks_exact(in_w)
        .zip(out.chunks_exact_mut(cols.len()))
    {
        padded[2..in_w + 2].copy_from_slice(src_row);
        padded[..2].fill(src_row[0]);
        padded[in_w + 2..].fill(src_row[in_w - 1]);
        for (dst, &(base, w)) in dst_row.iter_mut().zip(cols) {
            let p: &[f32; 4] = padded[(base + 1) as usize..][..4]
                .try_into()
                .expect("4 taps");
            *dst = p[0] * w[0] + p[1] * w[1] + p[2] * w[2] + p[3] * w[3];
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
        assert_eq!(crops.areas, vec![0, 1]);
        assert_eq!(crops.valid_count(), 1);
        assert_eq!(crops.masks, vec![1u8; 16]);
        let expected = (200.0 - 127.5) / 63.75;
        assert!(crops.pixels.iter().all(|v| (v - expected).abs() < 1e-5));
    }

    #[test]
    fn reused_output_equals_a_fresh_one() {
        let (h, w) = (9, 7);
        let image: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 256) as u8).collect();
        let mut many = vec![0f32; 3 * h * w];
        many[2 * w + 3] = 1.0;
        many[h * w..2 * h * w].fill(0.9);
        many[2 * h * w + 5 * w + 1..2 * h * w + 5 * w + 4].fill(0.7);
        let mut few = vec![0f32; 2 * h * w];
        few[h * w + w + 1] = 0.8;
        let o = CropOptions {
            size: 5,
            ..options()
        };
        let mut reused = crop_masks(&image, h, w, &many, &o).unwrap();
        assert_eq!(reused.valid_count(), 3);
        crop_masks_into(&image, h, w, &few, &o, &mut reused).unwrap();
        assert_eq!(reused, crop_masks(&image, h, w, &few, &o).unwrap());
        crop_masks_into(&image, h, w, &many, &o, &mut reused).unwrap();
        assert_eq!(reused, crop_masks(&image, h, w, &many, &o).unwrap());
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
