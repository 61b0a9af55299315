//! Compares the core tokenizer with the reference ids in a corpus made by
//! `tools/ovseg_tools/tokenizer_corpus.py`. Exits non-zero on any difference.
//!
//! cargo run --release -p ovseg-core --example tokenizer_parity -- build/parity/tokenizer.json

use ovseg_core::{ErrorCode, Overflow, Tokenizer};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: tokenizer_parity CORPUS.json");
    let corpus: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read corpus")).expect("json");
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
    std::process::exit(i32::from(failures > 0));
}
