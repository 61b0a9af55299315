//! CLIP's byte-level BPE tokenizer, identical in output to OpenAI's `simple_tokenizer`.
//!
//! The merge count comes from the caller (the model manifest), so the same code serves
//! OpenAI's vocabulary (48,894 merges) and smaller ones trained for small models.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;

use crate::error::{bail, Error, ErrorCode, Result};
use crate::text_clean::clean_text;

const START_OF_TEXT: &str = "<|startoftext|>";
const END_OF_TEXT: &str = "<|endoftext|>";

/// What to do with a text that needs more tokens than the context holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Fail with `TEXT_TOO_LONG` (OpenAI CLIP's behaviour, which OVSeg uses).
    #[default]
    Error,
    /// Keep the first `context - 1` tokens and end with the end-of-text id (open_clip's behaviour).
    Truncate,
}

impl crate::Named for Overflow {
    const ALL: &'static [Self] = &[Overflow::Error, Overflow::Truncate];

    fn name(self) -> &'static str {
        match self {
            Overflow::Error => "error",
            Overflow::Truncate => "truncate",
        }
    }
}

pub struct Tokenizer {
    /// Symbol string -> id, as `dict(zip(vocab, range(len(vocab))))` builds it (last id wins).
    encoder: HashMap<String, u32>,
    /// Canonical symbol pair -> (merge rank, canonical id of the merged symbol).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Byte -> id of its one-byte symbol, and of that symbol with `</w>`.
    byte_ids: [u32; 256],
    byte_end_ids: [u32; 256],
    start_id: u32,
    end_id: u32,
    context_length: usize,
}

/// GPT-2's reversible map from bytes to printable characters, in vocabulary order.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid char")))
        .collect()
}

fn pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+")
            .expect("valid regex")
    })
}

impl Tokenizer {
    /// Reads a CLIP vocabulary file (`.txt.gz` or plain text: a header line, then one merge per line).
    /// `merges`: how many merges to use; `None` uses every merge line in the file.
    pub fn from_file(path: &Path, merges: Option<usize>, context_length: usize) -> Result<Self> {
        let raw = crate::files::read_capped(
            path,
            crate::files::VOCAB_MAX_BYTES,
            "tokenizer vocabulary",
            ErrorCode::VocabInvalid,
        )?;
        Self::from_vocab_bytes(&raw, merges, context_length).map_err(|e| e.in_file(path))
    }

    /// The vocabulary file's bytes (gzip or plain); decompression stops at `VOCAB_MAX_BYTES`.
    pub fn from_vocab_bytes(
        raw: &[u8],
        merges: Option<usize>,
        context_length: usize,
    ) -> Result<Self> {
        let cap = crate::files::VOCAB_MAX_BYTES;
        let decoded;
        let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw)
                .take(cap + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    Error::new(
                        ErrorCode::VocabInvalid,
                        format!("not a valid gzip file: {e}"),
                    )
                })?;
            if out.len() as u64 > cap {
                bail!(
                    VocabInvalid,
                    "decompresses to more than the limit of {cap} bytes"
                );
            }
            decoded = out;
            &decoded[..]
        } else {
            raw
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::new(ErrorCode::VocabInvalid, "not UTF-8 text"))?;
        Self::from_merges_text(text, merges, context_length)
    }

    /// Builds the tokenizer from the vocabulary file's text.
    pub fn from_merges_text(
        text: &str,
        merges: Option<usize>,
        context_length: usize,
    ) -> Result<Self> {
        let mut lines: Vec<&str> = text.split('\n').skip(1).collect();
        if lines.last() == Some(&"") {
            lines.pop();
        }
        let count = merges.unwrap_or(lines.len());
        if count > lines.len() {
            bail!(
                VocabInvalid,
                "{count} merges requested but the file holds {}",
                lines.len()
            );
        }
        if context_length < 2 {
            bail!(
                InvalidArgument,
                "context length must be at least 2, got {context_length}"
            );
        }
        let byte_table = bytes_to_unicode();
        let mut vocab: Vec<String> = byte_table.iter().map(|&(_, c)| c.to_string()).collect();
        vocab.extend(byte_table.iter().map(|&(_, c)| format!("{c}</w>")));
        let mut merge_pairs = Vec::with_capacity(count);
        for (rank, line) in lines[..count].iter().enumerate() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [first, second] = parts[..] else {
                // The line is not quoted: the file may not be a vocabulary at all.
                bail!(VocabInvalid, "merge line {} is not two symbols", rank + 2);
            };
            vocab.push(format!("{first}{second}"));
            merge_pairs.push((first, second));
        }
        vocab.push(START_OF_TEXT.to_owned());
        vocab.push(END_OF_TEXT.to_owned());

        let mut encoder = HashMap::with_capacity(vocab.len());
        for (id, symbol) in vocab.iter().enumerate() {
            encoder.insert(symbol.clone(), id as u32);
        }
        let mut merges_map = HashMap::with_capacity(count);
        for (rank, &(first, second)) in merge_pairs.iter().enumerate() {
            let id_of = |s: &str| -> Result<u32> {
                encoder.get(s).copied().ok_or_else(|| {
                    Error::new(
                        ErrorCode::VocabInvalid,
                        format!(
                            "merge line {} has a symbol that is not in the vocabulary",
                            rank + 2
                        ),
                    )
                })
            };
            let merged = id_of(&format!("{first}{second}"))?;
            merges_map.insert((id_of(first)?, id_of(second)?), (rank as u32, merged));
        }
        let mut byte_ids = [0; 256];
        let mut byte_end_ids = [0; 256];
        for &(b, c) in &byte_table {
            byte_ids[b as usize] = encoder[&c.to_string()];
            byte_end_ids[b as usize] = encoder[&format!("{c}</w>")];
        }
        Ok(Self {
            start_id: encoder[START_OF_TEXT],
            end_id: encoder[END_OF_TEXT],
            encoder,
            merges: merges_map,
            byte_ids,
            byte_end_ids,
            context_length,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.encoder
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0)
    }

    pub fn start_id(&self) -> u32 {
        self.start_id
    }

    pub fn end_id(&self) -> u32 {
        self.end_id
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The BPE ids of a text, without start/end tokens (`SimpleTokenizer.encode`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean_text(text);
        let mut ids = Vec::new();
        for token in pattern().find_iter(&cleaned) {
            self.bpe(token.as_str(), &mut ids);
        }
        ids
    }

    fn bpe(&self, token: &str, out: &mut Vec<u32>) {
        if token == START_OF_TEXT || token == END_OF_TEXT {
            out.push(self.encoder[token]);
            return;
        }
        let bytes = token.as_bytes();
        let last = bytes.len() - 1;
        let mut word: Vec<u32> = bytes[..last]
            .iter()
            .map(|&b| self.byte_ids[b as usize])
            .collect();
        word.push(self.byte_end_ids[bytes[last] as usize]);
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|pair| {
                    self.merges
                        .get(&(pair[0], pair[1]))
                        .map(|&(rank, merged)| (rank, pair, merged))
                })
                .min_by_key(|&(rank, _, _)| rank);
            let Some((_, pair, merged)) = best else { break };
            let (first, second) = (pair[0], pair[1]);
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        out.extend_from_slice(&word);
    }

    /// One context-length row: `[start] + ids + [end]`, zero-padded.
    pub fn tokenize_one(&self, text: &str, overflow: Overflow) -> Result<Vec<i32>> {
        let ids = self.encode(text);
        let mut row = Vec::with_capacity(self.context_length);
        row.push(self.start_id as i32);
        row.extend(ids.iter().map(|&id| id as i32));
        row.push(self.end_id as i32);
        if row.len() > self.context_length {
            match overflow {
                Overflow::Error => bail!(
                    TextTooLong,
                    "text {:?} needs {} tokens but the context holds {} (use overflow: 'truncate' to cut it)",
                    preview(text),
                    row.len(),
                    self.context_length
                ),
                Overflow::Truncate => {
                    row.truncate(self.context_length);
                    row[self.context_length - 1] = self.end_id as i32;
                }
            }
        }
        row.resize(self.context_length, 0);
        Ok(row)
    }

    /// `[texts.len(), context_length]` ids, row-major.
    pub fn tokenize(&self, texts: &[impl AsRef<str>], overflow: Overflow) -> Result<Vec<i32>> {
        if texts.is_empty() {
            bail!(EmptyInput, "expected at least one text");
        }
        let mut out = Vec::with_capacity(texts.len() * self.context_length);
        for text in texts {
            out.extend(self.tokenize_one(text.as_ref(), overflow)?);
        }
        Ok(out)
    }
}

fn preview(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6-merge vocabulary: enough to check ids, merge order and specials by hand.
    fn tiny() -> Tokenizer {
        let text = "#version: test\nc a\nca t</w>\na t</w>\nd o\ndo g</w>\nc at</w>\n";
        Tokenizer::from_merges_text(text, None, 8).unwrap()
    }

    #[test]
    fn byte_symbol_order_matches_gpt2() {
        let table = bytes_to_unicode();
        assert_eq!(table[0], (b'!', '!'));
        assert_eq!(table.len(), 256);
        assert_eq!(table[188], (0, '\u{100}'));
        assert_eq!(table[255], (0xAD, '\u{143}'));
    }

    #[test]
    fn merges_follow_rank() {
        let t = tiny();
        // "cat": c a -> "ca" (rank 0), then "ca"+"t</w>" (rank 1). The string "cat</w>" is also
        // merge 5's result; as in Python's `dict(zip(vocab, ...))` the later id (517) wins.
        assert_eq!(t.encode("cat"), vec![517]);
        assert_eq!(t.encode("dog"), vec![516]);
        assert_eq!(t.start_id(), 518);
        assert_eq!(t.end_id(), 519);
        assert_eq!(t.encode("<|endoftext|>"), vec![519]);
    }

    #[test]
    fn overflow_policy() {
        let t = tiny();
        let err = t
            .tokenize_one("cat cat cat cat cat cat cat", Overflow::Error)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TextTooLong);
        let row = t
            .tokenize_one("cat cat cat cat cat cat cat", Overflow::Truncate)
            .unwrap();
        assert_eq!(row, vec![518, 517, 517, 517, 517, 517, 517, 519]);
        assert_eq!(
            t.tokenize_one("", Overflow::Error).unwrap(),
            vec![518, 519, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            t.tokenize(&[] as &[&str], Overflow::Error)
                .unwrap_err()
                .code,
            ErrorCode::EmptyInput
        );
    }

    #[test]
    fn bad_vocab_is_coded() {
        let err = Tokenizer::from_merges_text("#v\na b c\n", None, 77)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::VocabInvalid);
        let err = Tokenizer::from_merges_text("#v\na b\n", Some(5), 77)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::VocabInvalid);
    }

    #[test]
    fn vocab_messages_do_not_quote_contents() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
        let err = Tokenizer::from_vocab_bytes(passwd.as_bytes(), None, 77)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::VocabInvalid);
        assert!(!err.message.contains("daemon"), "{}", err.message);
        let err = Tokenizer::from_merges_text("#v\nsecret1 secret2\n", None, 77)
            .err()
            .unwrap();
        assert!(!err.message.contains("secret"), "{}", err.message);
    }

    #[test]
    fn gzip_vocab_is_read_and_decompression_capped() {
        use std::io::Write;
        let gz = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let text = "#version: test\nc a\nca t</w>\n";
        let t = Tokenizer::from_vocab_bytes(&gz(text.as_bytes()), None, 8).unwrap();
        assert_eq!(t.vocab_size(), 512 + 2 + 2);
        let bomb = gz(&vec![b'a'; crate::files::VOCAB_MAX_BYTES as usize + 1]);
        let err = Tokenizer::from_vocab_bytes(&bomb, None, 8).err().unwrap();
        assert_eq!(err.code, ErrorCode::VocabInvalid);
        assert!(err.message.contains("decompresses"), "{}", err.message);
        let err = Tokenizer::from_vocab_bytes(&[0x1f, 0x8b, 1, 2], None, 8)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::VocabInvalid);
        let err = Tokenizer::from_vocab_bytes(&[b'#', b'\n', 0xff, b' ', b'a'], None, 8)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::VocabInvalid);
    }
}
