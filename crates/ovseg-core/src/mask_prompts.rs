//! Learned mask prompts (`mask_embedding`), laid out as the image graph takes them.

use std::path::Path;

use crate::error::{ErrorCode, Result};
use crate::manifest::ClipGeometry;
use crate::npy;

/// Prompts padded to every block of the ViT, with a gate that switches substitution on per depth.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskPromptSet {
    /// 0 = no substitution anywhere.
    pub depth: usize,
    /// `[vision_layers, patches, width]`; rows at and past `depth` are zero.
    pub prompts: Vec<f32>,
    /// `[vision_layers]`: 1 below `depth`, else 0.
    pub gate: Vec<f32>,
}

impl MaskPromptSet {
    pub fn none(clip: &ClipGeometry) -> Self {
        Self {
            depth: 0,
            prompts: vec![0.0; clip.vision_layers * clip.patches() * clip.vision_width],
            gate: vec![0.0; clip.vision_layers],
        }
    }

    /// From a `[depth, patches or 1, width]` array; a single shared row is repeated over the patches.
    pub fn from_array(shape: &[usize], data: &[f32], clip: &ClipGeometry) -> Result<Self> {
        let (patches, width, layers) = (clip.patches(), clip.vision_width, clip.vision_layers);
        let depth = shape.first().copied().unwrap_or(0);
        let valid_shape = shape.len() == 3
            && (1..=layers).contains(&depth)
            && (shape[1] == patches || shape[1] == 1)
            && shape[2] == width;
        if !valid_shape {
            return Err(crate::Error::new(
                ErrorCode::PromptsInvalid,
                format!(
                    "mask prompts have shape {shape:?}, expected [depth, {patches} or 1, {width}] with depth in 1..={layers}"
                ),
            ));
        }
        let mut set = Self::none(clip);
        for d in 0..depth {
            let layer = &mut set.prompts[d * patches * width..][..patches * width];
            if shape[1] == 1 {
                let row = &data[d * width..][..width];
                layer
                    .chunks_exact_mut(width)
                    .for_each(|p| p.copy_from_slice(row));
            } else {
                layer.copy_from_slice(&data[d * patches * width..][..patches * width]);
            }
            set.gate[d] = 1.0;
        }
        set.depth = depth;
        Ok(set)
    }

    pub fn from_file(path: &Path, clip: &ClipGeometry) -> Result<Self> {
        let most = clip.vision_layers * clip.patches() * clip.vision_width;
        let array = npy::read_f32(path, most, ErrorCode::PromptsInvalid)?;
        npy::expect_finite(&array, "mask prompts", ErrorCode::PromptsInvalid)?;
        Self::from_array(&array.shape, &array.data, clip).map_err(|e| e.in_file(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip() -> ClipGeometry {
        ClipGeometry {
            image_size: 4,
            patch_size: 2,
            vision_width: 2,
            vision_layers: 3,
            embed_dim: 2,
            context_length: 77,
            vocab_size: 49408,
        }
    }

    #[test]
    fn shared_prompts_repeat_over_patches_and_pad() {
        let set = MaskPromptSet::from_array(&[1, 1, 2], &[7.0, 8.0], &clip()).unwrap();
        assert_eq!(set.gate, vec![1.0, 0.0, 0.0]);
        assert_eq!(&set.prompts[..8], &[7.0, 8.0, 7.0, 8.0, 7.0, 8.0, 7.0, 8.0]);
        assert!(set.prompts[8..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn wrong_shapes_are_coded() {
        for shape in [&[4, 4, 2][..], &[1, 3, 2], &[1, 4, 3], &[0, 4, 2], &[4, 2]] {
            let n: usize = shape.iter().product();
            let err = MaskPromptSet::from_array(shape, &vec![0.0; n], &clip()).unwrap_err();
            assert_eq!(err.code, ErrorCode::PromptsInvalid, "{shape:?}");
        }
    }
}
