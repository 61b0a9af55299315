//! `.npy` bytes: a message or an array whose data matches its shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovseg_core::npy::parse_f32;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = parse_f32(data) {
        assert_eq!(array.data.len(), array.shape.iter().product::<usize>());
    }
});
