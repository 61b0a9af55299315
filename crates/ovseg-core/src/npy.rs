//! Reads little-endian float32 `.npy` files (the prompt and no-object files of a model directory).

use std::path::Path;

use crate::error::{Error, ErrorCode, Result};

#[derive(Debug)]
pub struct NpyF32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads `path`; any problem is reported with `code` (the caller knows what the file is for).
pub fn read_f32(path: &Path, code: ErrorCode) -> Result<NpyF32> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorCode::ModelNotFound,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse_f32(&bytes).map_err(|message| Error::new(code, format!("{}: {message}", path.display())))
}

fn parse_f32(bytes: &[u8]) -> std::result::Result<NpyF32, String> {
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
        return Err(format!(
            "expected float32 little-endian ('<f4') data, found {descr}"
        ));
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
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_text}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let count: usize = shape.iter().product();
    let payload = &bytes[data_start..];
    if payload.len() != count * 4 {
        return Err(format!(
            "shape {shape:?} needs {} bytes of data, found {}",
            count * 4,
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
