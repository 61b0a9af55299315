//! CLIP's text cleaning, exactly as OpenAI's `simple_tokenizer` does it:
//! `ftfy.fix_text`, `html.unescape` twice, strip, collapse whitespace, lowercase.
//!
//! Of ftfy's fixes, everything but mojibake repair (`fix_encoding`) is implemented: HTML
//! entities, C1 controls, Latin ligatures, character width, curly quotes, line breaks,
//! terminal escapes, control characters and NFC. Mojibake repair guesses the wrong decoding
//! of already-broken text from a heuristic; it never fires on text that was decoded right.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::text_tables::{
    C1_AS_WINDOWS_1252, CONTROL_CHARS, FTFY_ENTITIES, HTML5_ENTITIES, INVALID_CHARREFS,
    INVALID_CODEPOINTS, LIGATURES, WIDTH_MAP,
};

/// ftfy fixes text in segments of at most this many code points (`max_decode_length`).
const FTFY_MAX_SEGMENT: usize = 1_000_000;

/// The whole cleaning step of CLIP's tokenizer: what `whitespace_clean(basic_clean(t)).lower()` returns.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    collapse_whitespace(&unescaped).to_lowercase()
}

/// `re.sub(r'\s+', ' ', text).strip()` (also covers the `strip()` of `basic_clean`).
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// `ftfy.fix_text` with its default configuration, minus mojibake repair.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // ftfy stops unescaping HTML for good once a segment contains '<' (it looks like markup).
    let mut unescape = true;
    for segment in ftfy_segments(text) {
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

/// Splits after each '\n', and every `FTFY_MAX_SEGMENT` code points within a line.
fn ftfy_segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len();
        for (count, (i, c)) in rest.char_indices().enumerate() {
            if count == FTFY_MAX_SEGMENT {
                end = i;
                break;
            }
            if c == '\n' {
                end = i + 1;
                break;
            }
        }
        let (segment, tail) = rest.split_at(end);
        rest = tail;
        Some(segment)
    })
}

/// ftfy's `fix_and_explain`: apply every fixer until the text stops changing.
fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_owned();
    loop {
        let mut next: Cow<str> = Cow::Borrowed(&text);
        if unescape {
            next = own(next, ftfy_unescape_html);
        }
        next = own(next, fix_c1_controls);
        next = own(next, fix_latin_ligatures);
        next = own(next, fix_character_width);
        next = own(next, uncurl_quotes);
        next = own(next, fix_line_breaks);
        next = own(next, remove_terminal_escapes);
        next = own(next, remove_control_chars);
        next = own(next, nfc);
        match next {
            Cow::Borrowed(_) => return text,
            Cow::Owned(changed) => {
                if changed == text {
                    return text;
                }
                text = changed;
            }
        }
    }
}

/// Applies a fixer to a `Cow`, keeping it borrowed when the fixer changes nothing.
fn own<'a>(text: Cow<'a, str>, fixer: fn(&str) -> Cow<'_, str>) -> Cow<'a, str> {
    match text {
        Cow::Borrowed(s) => fixer(s),
        Cow::Owned(s) => match fixer(&s) {
            Cow::Borrowed(_) => Cow::Owned(s),
            Cow::Owned(changed) => Cow::Owned(changed),
        },
    }
}

/// Replaces every char for which `map` returns `Some` (with its replacement).
fn map_chars<'a>(text: &'a str, map: impl Fn(char) -> Option<&'a str>) -> Cow<'a, str> {
    let Some(first) = text
        .char_indices()
        .find(|&(_, c)| map(c).is_some())
        .map(|(i, _)| i)
    else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first]);
    let mut buf = [0u8; 4];
    for c in text[first..].chars() {
        match map(c) {
            Some(replacement) => out.push_str(replacement),
            None => out.push_str(c.encode_utf8(&mut buf)),
        }
    }
    Cow::Owned(out)
}

fn lookup<'t>(table: &'t [(char, &'static str)], c: char) -> Option<&'t str> {
    table
        .binary_search_by_key(&c, |&(k, _)| k)
        .ok()
        .map(|i| table[i].1)
}

fn fix_latin_ligatures(text: &str) -> Cow<'_, str> {
    map_chars(text, |c| lookup(&LIGATURES, c))
}

fn fix_character_width(text: &str) -> Cow<'_, str> {
    map_chars(text, |c| lookup(&WIDTH_MAP, c))
}

fn uncurl_quotes(text: &str) -> Cow<'_, str> {
    map_chars(text, |c| match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => Some("'"),
        '\u{201c}'..='\u{201f}' => Some("\""),
        _ => None,
    })
}

fn remove_control_chars(text: &str) -> Cow<'_, str> {
    map_chars(text, |c| {
        CONTROL_CHARS.binary_search(&(c as u32)).ok().map(|_| "")
    })
}

fn fix_c1_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if ('\u{80}'..='\u{9f}').contains(&c) {
                    C1_AS_WINDOWS_1252[c as usize - 0x80]
                } else {
                    c
                }
            })
            .collect(),
    )
}

fn fix_line_breaks(text: &str) -> Cow<'_, str> {
    if !text.contains(['\r', '\u{2028}', '\u{2029}', '\u{85}']) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.replace("\r\n", "\n")
            .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n"),
    )
}

fn remove_terminal_escapes(text: &str) -> Cow<'_, str> {
    static ANSI: OnceLock<Regex> = OnceLock::new();
    if !text.contains('\u{1b}') {
        return Cow::Borrowed(text);
    }
    ANSI.get_or_init(|| Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").expect("valid regex"))
        .replace_all(text, "")
}

fn nfc(text: &str) -> Cow<'_, str> {
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        return Cow::Borrowed(text);
    }
    let normalized: String = text.nfc().collect();
    if normalized == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(normalized)
    }
}

/// ftfy's `unescape_html`: `&#?[0-9A-Za-z]{1,24};` references that are unambiguous.
fn ftfy_unescape_html(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'&' {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + 1;
        if j < bytes.len() && bytes[j] == b'#' {
            j += 1;
        }
        let name_start = j;
        while j < bytes.len() && bytes[j].is_ascii_alphanumeric() {
            j += 1;
        }
        let run = j - name_start;
        if !(1..=24).contains(&run) || j >= bytes.len() || bytes[j] != b';' {
            i += 1;
            continue;
        }
        let reference = &text[start..=j];
        let replacement: Cow<str> =
            if let Ok(k) = FTFY_ENTITIES.binary_search_by_key(&reference, |&(k, _)| k) {
                Cow::Borrowed(FTFY_ENTITIES[k].1)
            } else if reference.starts_with("&#") {
                let unescaped = html_unescape(reference);
                if unescaped.contains(';') {
                    Cow::Borrowed(reference)
                } else {
                    Cow::Owned(unescaped)
                }
            } else {
                Cow::Borrowed(reference)
            };
        out.push_str(&text[copied..start]);
        out.push_str(&replacement);
        copied = j + 1;
        i = j + 1;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Python's `html.unescape`.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match match_charref(after) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Matches `#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?` at the start of `s`
/// (what follows a '&') and returns the matched length and its replacement.
fn match_charref(s: &str) -> Option<(usize, String)> {
    let bytes = s.as_bytes();
    if bytes.first() == Some(&b'#') {
        let (digits_start, radix) = match bytes.get(1) {
            Some(b'x' | b'X') => (2, 16),
            _ => (1, 10),
        };
        let digits = bytes[digits_start..]
            .iter()
            .take_while(|b| {
                if radix == 16 {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if digits == 0 {
            return None;
        }
        let end = digits_start + digits;
        let len = if bytes.get(end) == Some(&b';') {
            end + 1
        } else {
            end
        };
        return Some((len, numeric_charref(&s[digits_start..end], radix)));
    }
    let mut end = 0;
    for (count, c) in s.chars().enumerate() {
        if count == 32 || matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';') {
            break;
        }
        end += c.len_utf8();
    }
    if end == 0 {
        return None;
    }
    let len = if bytes.get(end) == Some(&b';') {
        end + 1
    } else {
        end
    };
    let name = &s[..len];
    if let Some(value) = html5_entity(name) {
        return Some((len, value.to_owned()));
    }
    // The longest entity name that is a prefix (of at least 2 chars, shorter than the match).
    let boundaries: Vec<usize> = name.char_indices().map(|(i, _)| i).collect();
    for &cut in boundaries.iter().skip(2).rev() {
        if let Some(value) = html5_entity(&name[..cut]) {
            return Some((len, format!("{value}{}", &name[cut..])));
        }
    }
    Some((len, format!("&{name}")))
}

fn html5_entity(name: &str) -> Option<&'static str> {
    HTML5_ENTITIES
        .binary_search_by_key(&name, |&(k, _)| k)
        .ok()
        .map(|i| HTML5_ENTITIES[i].1)
}

fn numeric_charref(digits: &str, radix: u32) -> String {
    // Python parses arbitrarily large numbers; anything past U+10FFFF is U+FFFD anyway.
    let num = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
    if let Ok(i) = INVALID_CHARREFS.binary_search_by_key(&num, |&(k, _)| k) {
        return INVALID_CHARREFS[i].1.to_owned();
    }
    if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        return "\u{FFFD}".to_owned();
    }
    if INVALID_CODEPOINTS.binary_search(&num).is_ok() {
        return String::new();
    }
    char::from_u32(num).map(String::from).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_like_python() {
        assert_eq!(html_unescape("a &amp; b"), "a & b");
        assert_eq!(html_unescape("&amp"), "&");
        assert_eq!(html_unescape("&notit;"), "¬it;");
        assert_eq!(html_unescape("&#65;&#x42;&#X43"), "ABC");
        assert_eq!(html_unescape("&#0;"), "\u{FFFD}");
        assert_eq!(html_unescape("&#128;"), "€");
        assert_eq!(html_unescape("&#99999999999999;"), "\u{FFFD}");
        assert_eq!(html_unescape("&#1;x"), "x");
        assert_eq!(html_unescape("&bogus; & &#;"), "&bogus; & &#;");
    }

    #[test]
    fn ftfy_fixes() {
        assert_eq!(
            fix_text("\u{201c}quoted\u{201d} it\u{2019}s"),
            "\"quoted\" it's"
        );
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(fix_text("ﬂubberiﬁc"), "flubberific");
        assert_eq!(
            fix_text("Broken text&hellip; it&#x2019;s"),
            "Broken text… it's"
        );
        assert_eq!(fix_text("e\u{301}"), "é");
        assert_eq!(fix_text("a\u{1b}[31mred\u{1b}[0m\u{0}"), "ared");
        assert_eq!(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
        assert_eq!(fix_text("x\r\ny\u{85}"), "x\ny…");
    }

    #[test]
    fn clean_collapses_and_lowercases() {
        assert_eq!(clean_text("  Hello,\t\n  WORLD!  "), "hello, world!");
        assert_eq!(clean_text("&amp;amp;"), "&");
        assert_eq!(clean_text(""), "");
    }
}
