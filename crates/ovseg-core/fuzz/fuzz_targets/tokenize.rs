//! Any text through OpenAI's vocabulary (the tiny test model's copy): ids in range, one row each.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ovseg_core::{Overflow, Tokenizer};

const CONTEXT: usize = 77;

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let vocab = include_bytes!("../../../../models/tiny-random/bpe_simple_vocab_16e6.txt.gz");
        Tokenizer::from_vocab_bytes(vocab, Some(48894), CONTEXT).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let t = tokenizer();
    let row = t.tokenize_one(&text, Overflow::Truncate).unwrap();
    assert_eq!(row.len(), CONTEXT);
    // `vocab_size` walks the whole vocabulary: once per input, not per id.
    let ids = 0..t.vocab_size() as i32;
    assert!(row.iter().all(|id| ids.contains(id)));
    if let Ok(strict) = t.tokenize_one(&text, Overflow::Error) {
        assert_eq!(strict, row);
    }
});
