//! Reads little-endian float32 `.npy` files (the prompt and no-object files of a model directory).

use std::path::Path;

use crate::error::{Error, ErrorCode, Result};

#[derive(Debug)]
pub struct NpyF32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads `path` of at most `max_values` floats (the size is checked before reading); any problem
/// is reported with `code` (the caller knows what the file is for).
pub fn read_f32(path: &Path, max_values: usize, code: ErrorCode) -> Result<NpyF32> {
    let cap = (max_values as u64)
        .saturating_mul(4)
        .saturating_add(crate::files::NPY_HEADER_MAX_BYTES);
    let bytes = crate::files::read_capped(path, cap, ".npy file", code)?;
    parse_f32(&bytes).map_err(|message| Error::new(code, format!("{}: {message}", path.display())))
}

/// Parses a float32 `.npy` file's bytes. Messages never quote the file's contents.
pub fn parse_f32(bytes: &[u8]) -> std::result::Result<NpyF32, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text .npy header")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    if descr != "'<f4'" {
        return Err("expected float32 little-endian ('<f4') data".into());
    }
    if dict_value(header, "fortran_order") != Some("False") {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let shape = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| "malformed shape".to_owned()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let bytes_needed = shape
        .iter()
        .try_fold(4usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let payload = &bytes[data_start..];
    if payload.len() != bytes_needed {
        return Err(format!(
            "shape {shape:?} needs {bytes_needed} bytes of data, found {}",
            payload.len()
        ));
    }
    let data = payload
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(NpyF32 { shape, data })
}

/// The raw text of `'key': value` in a numpy header dict (values here never contain ", '").
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let start = header.find(&format!("'{key}':"))? + key.len() + 3;
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Refuses NaN and ±Infinity (a model file with them would label every pixel the same).
pub fn expect_finite(array: &NpyF32, what: &str, code: ErrorCode) -> Result<()> {
    match array.data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::new(
            code,
            format!("{what} has a non-finite value at index {i}"),
        )),
    }
}

/// Checks an array's shape against what the model needs.
pub fn expect_shape(
    array: &NpyF32,
    allowed: &[&[usize]],
    what: &str,
    code: ErrorCode,
) -> Result<()> {
    if allowed.contains(&array.shape.as_slice()) {
        return Ok(());
    }
    let options: Vec<String> = allowed.iter().map(|s| format!("{s:?}")).collect();
    Err(Error::new(
        code,
        format!(
            "{what} has shape {:?}, expected {}",
            array.shape,
            options.join(" or ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, values: &[f32]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        out
    }

    #[test]
    fn parses_shapes_and_data() {
        let a = parse_f32(&npy("<f4", "(2, 3)", &[1., 2., 3., 4., 5., 6.])).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], 6.0);
        let b = parse_f32(&npy("<f4", "(4,)", &[1., 2., 3., 4.])).unwrap();
        assert_eq!(b.shape, vec![4]);
    }

    #[test]
    fn rejects_wrong_dtype_and_truncation() {
        assert!(parse_f32(&npy("<f8", "(1,)", &[1., 2.]))
            .unwrap_err()
            .contains("float32"));
        assert!(parse_f32(&npy("<f4", "(3,)", &[1., 2.]))
            .unwrap_err()
            .contains("needs 12 bytes"));
        assert!(parse_f32(b"garbage!!!!!").is_err());
        // A shape whose byte count overflows is an error, not a panic.
        let huge = parse_f32(&npy("<f4", "(4611686018427387904, 4)", &[])).unwrap_err();
        assert!(huge.contains("too large"), "{huge}");
    }

    #[test]
    fn messages_do_not_quote_contents() {
        let e = parse_f32(&npy("root:x:0:0", "(1,)", &[1.0])).unwrap_err();
        assert!(!e.contains("root"), "{e}");
        let e = parse_f32(&npy("<f4", "(secret,)", &[1.0])).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn non_finite_values_are_coded() {
        let a = parse_f32(&npy("<f4", "(2,)", &[1.0, f32::NAN])).unwrap();
        let e = expect_finite(&a, "no-object", ErrorCode::NoObjectInvalid).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoObjectInvalid);
        let a = parse_f32(&npy("<f4", "(2,)", &[f32::NEG_INFINITY, 1.0])).unwrap();
        assert!(expect_finite(&a, "p", ErrorCode::PromptsInvalid).is_err());
        let a = parse_f32(&npy("<f4", "(2,)", &[f32::MAX, 1.0])).unwrap();
        assert!(expect_finite(&a, "p", ErrorCode::PromptsInvalid).is_ok());
    }

    #[test]
    fn shape_check_is_coded() {
        let a = NpyF32 {
            shape: vec![3, 16, 32],
            data: vec![],
        };
        assert!(expect_shape(
            &a,
            &[&[3, 16, 32], &[3, 1, 32]],
            "prompts",
            ErrorCode::PromptsInvalid
        )
        .is_ok());
        let e =
            expect_shape(&a, &[&[2, 16, 32]], "prompts", ErrorCode::PromptsInvalid).unwrap_err();
        assert_eq!(e.code, ErrorCode::PromptsInvalid);
    }
}
