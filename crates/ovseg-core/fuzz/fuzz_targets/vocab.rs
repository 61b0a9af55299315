//! Vocabulary file bytes, gzip (the seeds start with its magic) or plain text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovseg_core::Tokenizer;

fuzz_target!(|data: &[u8]| {
    if let Ok(tokenizer) = Tokenizer::from_vocab_bytes(data, None, 8) {
        let ids = tokenizer
            .tokenize_one("a cat", ovseg_core::Overflow::Truncate)
            .unwrap();
        assert_eq!(ids.len(), 8);
    }
});
