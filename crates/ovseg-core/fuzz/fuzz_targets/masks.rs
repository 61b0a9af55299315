//! Caller mask arrays: two size bytes, a threshold byte, then little-endian f32 values (any bits,
//! NaN and infinities included), checked, resized and cropped as `segment()` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovseg_core::resample::bilinear_resize;
use ovseg_core::mask_crop::{crop_masks, CropOptions};
use ovseg_core::segment::{caller_masks, MaskInput};

fuzz_target!(|data: &[u8]| {
    let [h, w, t, rest @ ..] = data else { return };
    let (height, width) = (usize::from(h % 16) + 1, usize::from(w % 16) + 1);
    let values: Vec<f32> = rest
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let Ok(soft) = caller_masks(MaskInput::Soft(&values), (height, width)) else {
        return;
    };
    let masks = soft.len() / (height * width);
    let (rh, rw) = (height * 2 + 1, width + 3);
    let resized = bilinear_resize(&soft, masks, (height, width), (rh, rw));
    let image = vec![128u8; rh * rw * 3];
    let options = CropOptions {
        threshold: f32::from(*t) / 255.0,
        size: 8,
        mean: [0.5; 3],
        std: [0.25; 3],
    };
    let crops = crop_masks(&image, rh, rw, &resized, &options).unwrap();
    assert_eq!(crops.boxes.len(), masks);
});
