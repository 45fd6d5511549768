//! The `.emb` file of one sample: its feature vector, tagged with the feature
//! identity of the backbone that computed it, so features of different backbones
//! are never mixed. Pure encoding and decoding.
//!
//! Layout (little-endian): the magic `EHEMB001` (8 bytes), the backbone's feature
//! identity as 64 ASCII hex digits, the dimension `n` (u32), then `n` f32 values.

use crate::backbone::BackboneId;

/// First bytes of an embedding file.
const MAGIC: &[u8; 8] = b"EHEMB001";
/// Bytes before the values: magic, identity, dimension.
const HEADER: usize = 8 + 64 + 4;

/// The file content of `features` computed by `backbone`.
pub fn encode(backbone: &BackboneId, features: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + features.len() * 4);
    bytes.extend_from_slice(MAGIC);
    let mut sha = [b'0'; 64];
    for (d, s) in sha.iter_mut().zip(backbone.features.as_bytes()) {
        *d = *s;
    }
    bytes.extend_from_slice(&sha);
    bytes.extend_from_slice(&(features.len() as u32).to_le_bytes());
    for f in features {
        bytes.extend_from_slice(&f.to_le_bytes());
    }
    bytes
}

/// The features in `bytes` if they were computed by `backbone`; `None` for
/// another backbone, a damaged or truncated file, or values that are not finite.
pub fn decode(bytes: &[u8], backbone: &BackboneId) -> Option<Vec<f32>> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC || bytes[8..72] != *backbone.features.as_bytes()
    {
        return None;
    }
    let dim = u32::from_le_bytes(bytes[72..76].try_into().ok()?) as usize;
    if bytes.len() != HEADER + dim.checked_mul(4)? {
        return None;
    }
    let v: Vec<f32> = bytes[HEADER..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    v.iter().all(|x| x.is_finite()).then_some(v)
}

/// The feature identity (64 hex digits) an embedding file is tagged with, if
/// `bytes` is a whole embedding file (header and as many values as it says).
pub fn identity(bytes: &[u8]) -> Option<&str> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return None;
    }
    let dim = u32::from_le_bytes(bytes[72..76].try_into().ok()?) as usize;
    if bytes.len() != HEADER + dim.checked_mul(4)? {
        return None;
    }
    std::str::from_utf8(&bytes[8..72])
        .ok()
        .filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bb(c: char) -> BackboneId {
        BackboneId::new("m".into(), c.to_string().repeat(64), "")
    }

    #[test]
    fn round_trip_and_refusals() {
        let v = vec![1.0f32, -2.5, 3.25];
        let bytes = encode(&bb('a'), &v);
        assert_eq!(decode(&bytes, &bb('a')), Some(v));
        assert_eq!(decode(&bytes, &bb('b')), None, "another backbone");
        assert_eq!(decode(&bytes[..bytes.len() - 1], &bb('a')), None);
        let mut nan = encode(&bb('a'), &[f32::NAN]);
        assert_eq!(decode(&nan, &bb('a')), None);
        nan[0] = b'X';
        assert_eq!(decode(&nan, &bb('a')), None);
    }
}
