//! Compares the core tokenizer with the reference ids in the corpora made by
//! `ovseg_tools.reference.tokenizer_corpus` (OpenAI's vocabulary) and `ovseg_tools.recipe.bpe` (the
//! default model's learned one). Fails on any difference.
//!
//!   cargo test --release -p ovseg-core --test parity_tokenizer -- --nocapture

mod common;

use std::path::Path;

use common::{fixture, read_json};
use ovseg_core::{ErrorCode, Overflow, Tokenizer};

#[test]
fn openai_vocabulary_matches_openai_tokenizer() {
    check(&fixture("parity/tokenizer.json"));
}

#[test]
fn learned_vocabulary_matches_the_reference_tokenizer() {
    check(&fixture("parity/tokenizer-world.json"));
}

fn check(path: &Path) {
    let corpus = read_json(path);
    let vocab = corpus["vocab"].as_str().expect("vocab path");
    let context = corpus["contextLength"].as_u64().expect("context") as usize;
    // OpenAI's file by default; a learned vocabulary says how many merges it has.
    let merges = corpus["merges"].as_u64().map_or(48_894, |m| m as usize);
    let tokenizer =
        Tokenizer::from_file(vocab.as_ref(), Some(merges), context).expect("load vocabulary");
    let mut cases: Vec<&serde_json::Value> =
        corpus["cases"].as_array().expect("cases").iter().collect();
    cases.extend(corpus["mojibakeCases"].as_array().expect("mojibakeCases"));
    let mut failures = 0;
    for case in &cases {
        let text = case["text"].as_str().expect("text");
        let expected: Vec<i32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        let too_long = case["tooLong"].as_bool().expect("tooLong");
        let got = tokenizer
            .tokenize_one(text, Overflow::Truncate)
            .expect("truncate never fails");
        let strict = tokenizer.tokenize_one(text, Overflow::Error);
        let strict_ok = match &strict {
            Err(e) => too_long && e.code == ErrorCode::TextTooLong,
            Ok(row) => !too_long && *row == got,
        };
        if got != expected || !strict_ok {
            failures += 1;
            if failures <= 20 {
                eprintln!("MISMATCH {text:?}\n  expected {expected:?}\n  got      {got:?}\n  strict   {strict:?}");
            }
        }
    }
    println!(
        "tokenizer parity: {} passed, {failures} failed",
        cases.len() - failures
    );
    assert_eq!(failures, 0, "tokenizer parity failed on {}", path.display());
}
