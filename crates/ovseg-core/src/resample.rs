//! Resampling, as OVSeg's pre- and post-processing do it (docs/ovseg.md, section 1 steps 1 and 8):
//!
//! - the image: detectron2's ResizeShortestEdge size rule (short side 640, long side at most
//!   2560, sizes `int(x + 0.5)`), resized with PIL's bilinear filter, which antialiases when
//!   downscaling. `resize_rgb` reproduces PIL's 8-bit arithmetic exactly: per output pixel, the
//!   triangle filter's weights over the (scaled) support in f64, normalized, then fixed point with
//!   22 fractional bits; a horizontal pass into an 8-bit image of the rows used, then a vertical pass.
//! - float planes (masks, score maps): PyTorch's `F.interpolate(mode='bilinear',
//!   align_corners=False)`.

use rayon::prelude::*;

use crate::cancel;
use crate::error::{bail, Result};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// detectron2's `ResizeShortestEdge.get_output_shape`: `(height, width)` after the resize.
pub fn shortest_edge_size(height: usize, width: usize, short: usize, max: usize) -> (usize, usize) {
    let (h, w) = (height as f64, width as f64);
    let scale = short as f64 / h.min(w);
    let (mut new_h, mut new_w) = if h < w {
        (short as f64, scale * w)
    } else {
        (scale * h, short as f64)
    };
    if new_h.max(new_w) > max as f64 {
        let scale = max as f64 / new_h.max(new_w);
        new_h *= scale;
        new_w *= scale;
    }
    ((new_h + 0.5) as usize, (new_w + 0.5) as usize)
}

/// For each output index: the first input index, and the fixed-point weights of the inputs from there.
fn coefficients(input: usize, output: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the bilinear (triangle) filter's support is 1
    let inv_scale = 1.0 / filter_scale; // PIL multiplies by the reciprocal: same rounding
    (0..output)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let min = ((center - support + 0.5) as isize).max(0) as usize;
            let max = ((center + support + 0.5) as isize).min(input as isize) as usize;
            let weights: Vec<f64> = (min..max)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * inv_scale).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    (if w < 0.0 { -0.5 + scaled } else { 0.5 + scaled }) as i32
                })
                .collect();
            (min, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= 1i64 << (PRECISION_BITS + 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// `Image.resize((out_w, out_h), Image.BILINEAR)` of `[height, width, 3]` RGB bytes, bit for bit.
pub fn resize_rgb(
    rgb: &[u8],
    (height, width): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Result<Vec<u8>> {
    if height == 0 || width == 0 || out_h == 0 || out_w == 0 || rgb.len() != height * width * 3 {
        bail!(
            InvalidImage,
            "cannot resize {} bytes as {height}x{width} RGB to {out_h}x{out_w}",
            rgb.len()
        );
    }
    let horizontal = (out_w != width).then(|| coefficients(width, out_w));
    let vertical = (out_h != height).then(|| coefficients(height, out_h));
    // The horizontal pass only covers the rows the vertical pass reads.
    let (first_row, last_row) = match &vertical {
        Some(v) => (v[0].0, v[out_h - 1].0 + v[out_h - 1].1.len()),
        None => (0, height),
    };
    let rows = &rgb[first_row * width * 3..last_row * width * 3];
    let temp: Vec<u8>;
    let (src, src_w): (&[u8], usize) = match &horizontal {
        None => (rows, width),
        Some(coeffs) => {
            let mut out = vec![0u8; (last_row - first_row) * out_w * 3];
            out.par_chunks_exact_mut(out_w * 3)
                .zip(rows.par_chunks_exact(width * 3))
                .for_each(|(dst, src)| {
                    for ((start, k), px) in coeffs.iter().zip(dst.chunks_exact_mut(3)) {
                        let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                        for (j, &w) in k.iter().enumerate() {
                            let s = &src[(start + j) * 3..][..3];
                            for c in 0..3 {
                                acc[c] += i64::from(s[c]) * i64::from(w);
                            }
                        }
                        for c in 0..3 {
                            px[c] = clip8(acc[c]);
                        }
                    }
                });
            temp = out;
            (&temp, out_w)
        }
    };
    let Some(coeffs) = vertical else {
        return Ok(src.to_vec());
    };
    let mut out = vec![0u8; out_h * src_w * 3];
    out.par_chunks_exact_mut(src_w * 3)
        .zip(coeffs.par_iter())
        .for_each(|(dst, (start, k))| {
            let start = start - first_row;
            for (x, px) in dst.chunks_exact_mut(3).enumerate() {
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (j, &w) in k.iter().enumerate() {
                    let s = &src[((start + j) * src_w + x) * 3..][..3];
                    for c in 0..3 {
                        acc[c] += i64::from(s[c]) * i64::from(w);
                    }
                }
                for c in 0..3 {
                    px[c] = clip8(acc[c]);
                }
            }
        });
    Ok(out)
}

/// Source rows/columns and weights of PyTorch's bilinear interpolation (align_corners=False):
/// `src = max(0, (dst + 0.5) * (in / out) - 0.5)`, scale rounded to f32, the index in f64 as
/// PyTorch's CPU kernel computes it.
fn linear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = f64::from(input as f32 / output as f32);
    (0..output)
        .map(|dst| {
            let real = (scale * (dst as f64 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let w1 = (real - i0 as f64) as f32;
            (i0, i1, 1.0 - w1, w1)
        })
        .collect()
}

/// `F.interpolate(x, (out_h, out_w), mode='bilinear', align_corners=False)` of `[channels, in_h, in_w]`.
pub fn bilinear_resize(
    input: &[f32],
    channels: usize,
    in_size: (usize, usize),
    out_size: (usize, usize),
) -> Vec<f32> {
    bilinear_resize_window(input, channels, in_size, out_size, out_size, |v| v)
}

/// The top-left `window` of `bilinear_resize(plane, 1, in_size, out_size)` row by row: `each(y, row)`
/// for every output row, with the same arithmetic, never holding the whole output (SAM's mask
/// post-processing scores and thresholds each row as it comes).
pub fn bilinear_rows(
    plane: &[f32],
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    (win_h, win_w): (usize, usize),
    mut each: impl FnMut(usize, &[f32]),
) {
    let rows = &linear_taps(in_h, out_h)[..win_h];
    let cols = &linear_taps(in_w, out_w)[..win_w];
    // Only the input rows the window reads.
    let used = rows.iter().map(|r| r.1 + 1).max().unwrap_or(0);
    let mut horizontal = Vec::with_capacity(used * win_w);
    for row in plane[..used * in_w].chunks_exact(in_w) {
        horizontal.extend(
            cols.iter()
                .map(|&(x0, x1, wx0, wx1)| wx0 * row[x0] + wx1 * row[x1]),
        );
    }
    let mut out = vec![0f32; win_w];
    for (y, &(y0, y1, wy0, wy1)) in rows.iter().enumerate() {
        let (r0, r1) = (
            &horizontal[y0 * win_w..][..win_w],
            &horizontal[y1 * win_w..][..win_w],
        );
        for ((dst, &a), &b) in out.iter_mut().zip(r0).zip(r1) {
            *dst = wy0 * a + wy1 * b;
        }
        each(y, &out);
    }
}

/// `map` of the top-left `window` of `bilinear_resize(input, .., out_size)`, computed without the
/// rest (MaskFormer upsamples its masks to the padded size, crops them to the image, then applies
/// the sigmoid: fused here, one pass over the output). Once the current call is cancelled the
/// remaining channels are left at zero: callers `cancel::check()` after.
pub fn bilinear_resize_window(
    input: &[f32],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    (win_h, win_w): (usize, usize),
    map: impl Fn(f32) -> f32 + Sync,
) -> Vec<f32> {
    let rows = &linear_taps(in_h, out_h)[..win_h];
    let cols = &linear_taps(in_w, out_w)[..win_w];
    let mut out = vec![0f32; channels * win_h * win_w];
    let stopped = cancel::stopped();
    // Separable: each input row interpolated horizontally once, then every output row is a
    // weighted sum of two of those (a loop that vectorizes). Same arithmetic as the 2-D formula
    // `wy0 * (wx0 * a + wx1 * b) + wy1 * (wx0 * c + wx1 * d)`.
    out.par_chunks_exact_mut(win_h * win_w)
        .enumerate()
        .for_each_init(Vec::new, |horizontal, (c, plane_out)| {
            if stopped() {
                return;
            }
            let plane = &input[c * in_h * in_w..][..in_h * in_w];
            horizontal.clear();
            for row in plane.chunks_exact(in_w) {
                horizontal.extend(
                    cols.iter()
                        .map(|&(x0, x1, wx0, wx1)| wx0 * row[x0] + wx1 * row[x1]),
                );
            }
            for (dst_row, &(y0, y1, wy0, wy1)) in plane_out.chunks_exact_mut(win_w).zip(rows) {
                let (r0, r1) = (
                    &horizontal[y0 * win_w..][..win_w],
                    &horizontal[y1 * win_w..][..win_w],
                );
                for ((dst, &a), &b) in dst_row.iter_mut().zip(r0).zip(r1) {
                    *dst = map(wy0 * a + wy1 * b);
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_the_window_of_the_resize() {
        let plane: Vec<f32> = (0..7 * 5).map(|i| ((i * 37) % 11) as f32 - 4.5).collect();
        for (out, window) in [
            ((16, 12), (11, 9)),
            ((16, 12), (16, 12)),
            ((7, 5), (7, 5)),
            ((3, 4), (2, 4)),
        ] {
            let want = bilinear_resize_window(&plane, 1, (7, 5), out, window, |v| v);
            let mut got = Vec::new();
            let mut ys = Vec::new();
            bilinear_rows(&plane, (7, 5), out, window, |y, row| {
                ys.push(y);
                got.extend_from_slice(row);
            });
            assert_eq!(ys, (0..window.0).collect::<Vec<_>>());
            assert_eq!(got, want, "{out:?} {window:?}");
        }
        // To the same size: the identity (weights 1 and 0).
        let mut same = Vec::new();
        bilinear_rows(&plane, (7, 5), (7, 5), (7, 5), |_, row| {
            same.extend_from_slice(row)
        });
        assert_eq!(same, plane);
    }

    #[test]
    fn shortest_edge_follows_detectron2() {
        assert_eq!(shortest_edge_size(480, 640, 640, 2560), (640, 853));
        assert_eq!(shortest_edge_size(1000, 100, 640, 2560), (2560, 256));
        assert_eq!(shortest_edge_size(333, 333, 640, 2560), (640, 640));
    }

    #[test]
    fn constant_images_stay_constant_and_same_size_is_a_copy() {
        let img = vec![77u8; 5 * 7 * 3];
        assert!(resize_rgb(&img, (5, 7), (3, 11))
            .unwrap()
            .iter()
            .all(|&v| v == 77));
        let ramp: Vec<u8> = (0..4 * 6 * 3).map(|i| i as u8).collect();
        assert_eq!(resize_rgb(&ramp, (4, 6), (4, 6)).unwrap(), ramp);
        assert!(resize_rgb(&ramp, (4, 6), (0, 6)).is_err());
    }

    #[test]
    fn bilinear_keeps_constants_and_identity() {
        let out = bilinear_resize(&[3.0; 6], 1, (2, 3), (5, 4));
        assert!(out.iter().all(|v| (v - 3.0).abs() < 1e-6));
        let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(bilinear_resize(&x, 1, (3, 4), (3, 4)), x);
    }
}
