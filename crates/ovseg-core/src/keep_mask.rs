//! Per-patch keep masks for mask prompt tuning: a patch is kept (1) when ANY of its pixels is
//! foreground, i.e. `ceil(avg_pool(mask, patch))` as OVSeg computes it; else a prompt replaces it (0).

use crate::error::{bail, Result};

/// `masks`: `[batch, size, size]` row-major, nonzero = foreground. Returns `[batch, grid * grid]`.
pub fn patch_keep_mask(masks: &[u8], size: usize, patch: usize) -> Result<Vec<f32>> {
    if size == 0 || patch == 0 || !size.is_multiple_of(patch) {
        bail!(
            InvalidArgument,
            "mask size {size} is not a positive multiple of the patch size {patch}"
        );
    }
    let pixels = size * size;
    if masks.is_empty() || !masks.len().is_multiple_of(pixels) {
        bail!(
            InvalidMask,
            "mask data of {} values is not a whole number of {size}x{size} masks",
            masks.len()
        );
    }
    let grid = size / patch;
    let mut keep = vec![0f32; masks.len() / pixels * grid * grid];
    for (mask, out) in masks
        .chunks_exact(pixels)
        .zip(keep.chunks_exact_mut(grid * grid))
    {
        for (y, row) in mask.chunks_exact(size).enumerate() {
            let out_row = &mut out[(y / patch) * grid..][..grid];
            for (pixels_in_patch, kept) in row.chunks_exact(patch).zip(out_row.iter_mut()) {
                if pixels_in_patch.iter().any(|&p| p != 0) {
                    *kept = 1.0;
                }
            }
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn any_foreground_pixel_keeps_its_patch() {
        // One 4x4 mask, patch 2: foreground at (0,0) and (3,2) -> patches 0 and 3.
        let mut mask = vec![0u8; 16];
        mask[0] = 1;
        mask[3 * 4 + 2] = 255;
        assert_eq!(
            patch_keep_mask(&mask, 4, 2).unwrap(),
            vec![1.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(patch_keep_mask(&[0u8; 16], 4, 2).unwrap(), vec![0.0; 4]);
        assert_eq!(patch_keep_mask(&[1u8; 32], 4, 2).unwrap(), vec![1.0; 8]);
    }

    #[test]
    fn wrong_sizes_are_coded() {
        assert_eq!(
            patch_keep_mask(&[0u8; 15], 4, 2).unwrap_err().code,
            ErrorCode::InvalidMask
        );
        assert_eq!(
            patch_keep_mask(&[], 4, 2).unwrap_err().code,
            ErrorCode::InvalidMask
        );
        assert_eq!(
            patch_keep_mask(&[0u8; 9], 3, 2).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
}
