//! JPEG with `jpeg-decoder` (strict: truncated data is an error, not grey).
//!
//! 1. A structural scan of the markers ([`scan_markers`]): every segment inside the
//!    data, at least one scan, and an EOI marker after the entropy-coded data.
//! 2. MJPEG frames without Huffman tables get the standard ones ([`ANNEX_K_TABLES`]).
//! 3. Each scan's entropy-coded data is followed by [`SCAN_PADDING`], 1-bits that a
//!    complete scan never reads. `jpeg-decoder` reads zeros once it meets a marker,
//!    so a scan cut short but followed by a marker (a truncated file with an EOI put
//!    back, or a webcam frame with a lost packet) would decode to a flat patch; with
//!    the padding it reads 1-bits instead, which no Huffman code is made of (T.81
//!    Annex C), and fails. (A progressive JPEG that lacks its later scans still
//!    decodes, at a lower quality: the decoder does not say which coefficients it
//!    never received.)
//! 4. The header: size limits, then the memory the decode needs; above the budget,
//!    DCT scaling to 1/2, 1/4 or 1/8.
//! 5. The decode, conversion to RGB and the EXIF orientation.

use std::io::Read;

use image::metadata::Orientation;
use image::RgbImage;
use jpeg_decoder::{CodingProcess, Decoder, PixelFormat};

use super::{apply_orientation, check_sides, orientation_copies, DecodeError, ImageLimits};

/// One Huffman table as a DHT segment carries it (ITU-T T.81 B.2.4.2).
#[derive(Debug)]
pub(super) struct HuffmanTable {
    /// Table class (0 DC, 1 AC) in the high nibble, destination id in the low one.
    pub class_id: u8,
    /// Number of codes of each length, 1 to 16 bits (`BITS`).
    pub counts: [u8; 16],
    /// The symbols, in order of increasing code length (`HUFFVAL`).
    pub symbols: &'static [u8],
}

/// The Huffman tables of ITU-T T.81 Annex K.3 (Tables K.3 to K.6): DC and AC for
/// luminance (id 0) and chrominance (id 1). Motion-JPEG (AVI1, most USB webcams)
/// leaves them out of every frame and expects the decoder to use these.
pub(super) const ANNEX_K_TABLES: [HuffmanTable; 4] = [
    // Table K.3: luminance DC differences.
    HuffmanTable {
        class_id: 0x00,
        counts: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        symbols: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    },
    // Table K.5: luminance AC coefficients.
    HuffmanTable {
        class_id: 0x10,
        counts: [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D],
        symbols: &[
            0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51,
            0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1,
            0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18,
            0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39,
            0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57,
            0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75,
            0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92,
            0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
            0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
            0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8,
            0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2,
            0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
        ],
    },
    // Table K.4: chrominance DC differences.
    HuffmanTable {
        class_id: 0x01,
        counts: [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        symbols: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    },
    // Table K.6: chrominance AC coefficients.
    HuffmanTable {
        class_id: 0x11,
        counts: [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
        symbols: &[
            0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
            0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09,
            0x23, 0x33, 0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25,
            0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38,
            0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56,
            0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74,
            0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
            0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
            0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
            0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6,
            0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2,
            0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
        ],
    },
];

/// Marker codes (the byte after 0xFF), ITU-T T.81 Table B.1.
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;

/// What [`scan_markers`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// Offset of the 0xFF of the first SOS marker.
    pub first_sos: usize,
    /// Whether a DHT segment comes before the first SOS.
    pub dht_before_sos: bool,
    /// For each scan, the offset where its entropy-coded data ends: the first 0xFF of
    /// the marker after it (fill bytes included).
    pub scan_ends: Vec<usize>,
    /// Offset just past the EOI marker; any bytes after it are ignored.
    pub end: usize,
}

/// Stuffed 0xFF bytes (0xFF00 is one data byte 0xFF): 128 1-bits, more than a
/// Huffman code (16 bits) and its extra bits (up to 15) can use before an invalid,
/// all-1s code comes up.
const SCAN_PADDING: [u8; 32] = {
    let mut p = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        p[i] = 0xFF;
        i += 2;
    }
    p
};

const NO_EOI: &str = "the data ends before the EOI marker (the file is truncated)";

/// Most scans (SOS segments) a JPEG may have. A progressive JPEG from libjpeg has
/// about ten; each scan makes the decoder walk the image's blocks again, so
/// thousands of tiny scans would keep a CPU busy for hours.
pub(super) const MAX_SCANS: usize = 64;

/// Walk the markers of a JPEG without decoding it: each segment's length must stay
/// inside the data, entropy-coded data is skipped (stuffed 0xFF00 bytes and RST
/// markers included), and the walk must reach an EOI marker after at least one scan.
/// Stray bytes between segments are skipped, as libjpeg and `jpeg-decoder` do.
pub(super) fn scan_markers(b: &[u8]) -> Result<Layout, String> {
    if !b.starts_with(&[0xFF, SOI]) {
        return Err("it does not start with an SOI marker".into());
    }
    let mut pos = 2;
    let mut first_sos = None;
    let mut dht_before_sos = false;
    let mut scan_ends = Vec::new();
    loop {
        let (at, code) = next_marker(b, pos).ok_or(NO_EOI)?;
        pos = at + 2;
        match code {
            EOI => {
                let first_sos = first_sos.ok_or("there is no scan (SOS) before the EOI marker")?;
                return Ok(Layout {
                    first_sos,
                    dht_before_sos,
                    scan_ends,
                    end: pos,
                });
            }
            // Markers without a segment: TEM, RST0..7 (a stray RST is the decoder's call).
            0x01 | 0xD0..=0xD7 => {}
            SOI => return Err(format!("a second SOI marker at offset {at}")),
            _ => {
                let len = b
                    .get(pos..pos + 2)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                    .ok_or(NO_EOI)?;
                if len < 2 {
                    return Err(format!(
                        "marker 0xFF{code:02X} at offset {at} has an impossible length {len}"
                    ));
                }
                let end = pos + len;
                if end > b.len() {
                    return Err(format!(
                        "the 0xFF{code:02X} segment at offset {at} runs past the end of the data"
                    ));
                }
                pos = end;
                if code == DHT && first_sos.is_none() {
                    dht_before_sos = true;
                } else if code == SOS {
                    if scan_ends.len() >= MAX_SCANS {
                        return Err(format!("it has more than {MAX_SCANS} scans"));
                    }
                    first_sos.get_or_insert(at);
                    pos = end_of_entropy_data(b, pos).ok_or(NO_EOI)?;
                    scan_ends.push(pos);
                }
            }
        }
    }
}

/// The next marker from `pos`: the offset of its 0xFF (the last one, after any fill
/// bytes) and its code. 0xFF00 outside entropy-coded data is skipped like stray bytes.
fn next_marker(b: &[u8], mut pos: usize) -> Option<(usize, u8)> {
    loop {
        let ff = pos + b.get(pos..)?.iter().position(|&x| x == 0xFF)?;
        let code_at = ff + 1 + b.get(ff + 1..)?.iter().position(|&x| x != 0xFF)?;
        let code = *b.get(code_at)?;
        if code != 0x00 {
            return Some((code_at - 1, code));
        }
        pos = code_at + 1;
    }
}

/// Offset of the first 0xFF (fill bytes included) of the marker that ends the
/// entropy-coded data starting at `pos` (stuffed 0xFF00 and RST0..7 belong to the
/// data), or `None` at the end.
fn end_of_entropy_data(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let ff = pos + b.get(pos..)?.iter().position(|&x| x == 0xFF)?;
        let code_at = ff + 1 + b.get(ff + 1..)?.iter().position(|&x| x != 0xFF)?;
        match *b.get(code_at)? {
            0x00 | 0xD0..=0xD7 => pos = code_at + 1,
            _ => return Some(ff),
        }
    }
}

/// Bytes of the DHT segment holding [`ANNEX_K_TABLES`].
fn annex_k_dht() -> Vec<u8> {
    let body: usize = ANNEX_K_TABLES
        .iter()
        .map(|t| 1 + t.counts.len() + t.symbols.len())
        .sum();
    let len = (body + 2) as u16; // 418: fits
    let mut seg = Vec::with_capacity(body + 4);
    seg.extend_from_slice(&[0xFF, DHT]);
    seg.extend_from_slice(&len.to_be_bytes());
    for t in &ANNEX_K_TABLES {
        seg.push(t.class_id);
        seg.extend_from_slice(&t.counts);
        seg.extend_from_slice(t.symbols);
    }
    seg
}

/// What the decoder reads, as pieces of `jpeg` and inserted bytes, without copying:
/// up to the EOI, `dht` (if any) before the first SOS, [`SCAN_PADDING`] after each
/// scan. `None` if the layout does not fit the data.
fn pieces<'a>(jpeg: &'a [u8], layout: &Layout, dht: Option<&'a [u8]>) -> Option<Pieces<'a>> {
    let mut parts = Vec::with_capacity(2 * layout.scan_ends.len() + 3);
    let mut from = 0;
    if let Some(dht) = dht {
        parts.push(jpeg.get(..layout.first_sos)?);
        parts.push(dht);
        from = layout.first_sos;
    }
    for &end in &layout.scan_ends {
        parts.push(jpeg.get(from..end)?);
        parts.push(&SCAN_PADDING[..]);
        from = end;
    }
    parts.push(jpeg.get(from..layout.end)?);
    Some(Pieces { parts, at: 0 })
}

/// Slices read one after the other.
struct Pieces<'a> {
    parts: Vec<&'a [u8]>,
    at: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(part) = self.parts.get_mut(self.at) {
            if part.is_empty() {
                self.at += 1;
            } else {
                return part.read(buf);
            }
        }
        Ok(0)
    }
}

fn damaged(detail: impl std::fmt::Display) -> DecodeError {
    DecodeError::Corrupt(format!("the JPEG is damaged or incomplete: {detail}"))
}

fn decoder_error(e: jpeg_decoder::Error) -> DecodeError {
    match e {
        jpeg_decoder::Error::Unsupported(feature) => DecodeError::Corrupt(format!(
            "the JPEG uses a feature that cannot be decoded: {feature:?}"
        )),
        e => damaged(e),
    }
}

/// `len` scaled by `eighths`/8, rounded up, as `jpeg-decoder` does.
fn scaled(len: u32, eighths: u32) -> u32 {
    (len * eighths).div_ceil(8)
}

/// Bytes a decode at `eighths`/8 of the size holds at its peak, roughly: the
/// component planes and the interleaved output (each width × height × bytes per
/// pixel), the RGB copy when one is made (grey, CMYK, rotation), and for progressive
/// JPEGs the coefficients, kept at full size whatever the scale (2 bytes per sample,
/// blocks padded to 16 pixels).
fn bytes_needed(info: &Header, eighths: u32) -> u64 {
    let px = u64::from(scaled(info.width, eighths)) * u64::from(scaled(info.height, eighths));
    let out = px * info.format.pixel_bytes() as u64;
    let planes = out;
    let rgb = if info.copies { px * 3 } else { 0 };
    let coefficients = if info.process == CodingProcess::DctProgressive {
        let pad = |n: u32| u64::from(n.div_ceil(16) * 16);
        pad(info.width) * pad(info.height) * 2 * components(info.format)
    } else {
        0
    };
    planes + out + rgb + coefficients
}

fn components(f: PixelFormat) -> u64 {
    match f {
        PixelFormat::L8 | PixelFormat::L16 => 1,
        PixelFormat::RGB24 => 3,
        PixelFormat::CMYK32 => 4,
    }
}

/// What the budget depends on.
struct Header {
    width: u32,
    height: u32,
    format: PixelFormat,
    process: CodingProcess,
    /// Whether an RGB copy of the decoder's output is made.
    copies: bool,
}

/// The least reduction (8, 4, 2 or 1 eighths) that fits the budget; lossless JPEGs
/// cannot be scaled.
fn choose_scale(h: &Header, budget: u64) -> Result<u32, DecodeError> {
    let choices: &[u32] = if h.process == CodingProcess::Lossless {
        &[8]
    } else {
        &[8, 4, 2, 1]
    };
    let mut needed = 0;
    for &eighths in choices {
        needed = bytes_needed(h, eighths);
        if needed <= budget {
            return Ok(eighths);
        }
    }
    Err(DecodeError::OverBudget {
        width: h.width,
        height: h.height,
        needed,
        budget,
    })
}

fn orientation(exif: Option<&[u8]>) -> Orientation {
    exif.and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms)
}

/// Decode a JPEG (see the module documentation).
pub(super) fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, DecodeError> {
    let layout = scan_markers(bytes).map_err(damaged)?;
    let dht = (!layout.dht_before_sos).then(annex_k_dht);
    let jpeg = pieces(bytes, &layout, dht.as_deref()).ok_or_else(|| damaged(NO_EOI))?;

    let mut decoder = Decoder::new(jpeg);
    decoder.read_info().map_err(decoder_error)?;
    let info = decoder.info().ok_or_else(|| damaged("no frame header"))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    check_sides(width, height, limits)?;
    // The EXIF segment normally comes before the frame header, so it is known here.
    let header = Header {
        width,
        height,
        format: info.pixel_format,
        process: info.coding_process,
        copies: info.pixel_format != PixelFormat::RGB24
            || orientation_copies(orientation(decoder.exif_data())),
    };
    let eighths = choose_scale(&header, limits.budget_bytes)?;
    decoder
        .set_max_decoding_buffer_size(usize::try_from(limits.budget_bytes).unwrap_or(usize::MAX));
    if eighths < 8 {
        // Both fit in u16: they are at most the declared u16 sizes.
        let w = u16::try_from(scaled(width, eighths)).unwrap_or(u16::MAX);
        let h = u16::try_from(scaled(height, eighths)).unwrap_or(u16::MAX);
        decoder.scale(w, h).map_err(decoder_error)?;
    }
    let pixels = decoder.decode().map_err(decoder_error)?;
    let info = decoder.info().ok_or_else(|| damaged("no frame header"))?;
    let rgb = to_rgb(
        pixels,
        u32::from(info.width),
        u32::from(info.height),
        info.pixel_format,
    )?;
    Ok(apply_orientation(rgb, orientation(decoder.exif_data())))
}

/// The decoder's output to RGB: grey L8 and L16 (its high byte) to three equal
/// channels, CMYK to RGB. `jpeg-decoder` already undoes Adobe's inverted storage,
/// so its CMYK values are ink amounts: r = (255 − c)(255 − k) / 255, and so on.
fn to_rgb(
    px: Vec<u8>,
    width: u32,
    height: u32,
    format: PixelFormat,
) -> Result<RgbImage, DecodeError> {
    let n = width as usize * height as usize;
    let expected = n * format.pixel_bytes();
    if px.len() != expected {
        // E.g. a lossless JPEG of more than 8 bits with colour, returned as 16 bits per sample.
        return Err(DecodeError::Corrupt(format!(
            "the JPEG decoder returned {} bytes for {width}x{height} {format:?}, not {expected}: \
             this kind of JPEG is not supported",
            px.len()
        )));
    }
    let rgb = match format {
        PixelFormat::RGB24 => px,
        PixelFormat::L8 => {
            let mut rgb = Vec::with_capacity(n * 3);
            rgb.extend(px.iter().flat_map(|&g| [g, g, g]));
            rgb
        }
        PixelFormat::L16 => {
            let mut rgb = Vec::with_capacity(n * 3);
            rgb.extend(px.chunks_exact(2).flat_map(|p| {
                let g = u16::from_ne_bytes([p[0], p[1]]).to_be_bytes()[0];
                [g, g, g]
            }));
            rgb
        }
        PixelFormat::CMYK32 => {
            let mut rgb = Vec::with_capacity(n * 3);
            let ink = |c: u8, k: u8| ((255 - u32::from(c)) * (255 - u32::from(k)) + 127) / 255;
            rgb.extend(px.chunks_exact(4).flat_map(|p| {
                [ink(p[0], p[3]), ink(p[1], p[3]), ink(p[2], p[3])].map(|v| v as u8)
            }));
            rgb
        }
    };
    RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| damaged("the decoder returned fewer pixels than the image has"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annex_k_tables_are_well_formed() {
        for t in &ANNEX_K_TABLES {
            let total: usize = t.counts.iter().map(|&c| usize::from(c)).sum();
            assert_eq!(total, t.symbols.len(), "table {:02X}", t.class_id);
        }
        let dht = annex_k_dht();
        assert_eq!(dht.len(), 420);
        assert_eq!(&dht[..4], &[0xFF, 0xC4, 0x01, 0xA2]);
    }

    #[test]
    fn thousands_of_tiny_scans_are_refused_before_decoding() {
        let with_scans = |n: usize| {
            let mut b = vec![0xFF, SOI];
            for _ in 0..n {
                // An SOS header for one component and no entropy-coded data.
                b.extend_from_slice(&[0xFF, SOS, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
            }
            b.extend_from_slice(&[0xFF, EOI]);
            b
        };
        assert!(scan_markers(&with_scans(MAX_SCANS)).is_ok());
        let err = scan_markers(&with_scans(MAX_SCANS + 1)).expect_err("too many scans");
        assert!(err.contains("scans"), "{err}");
    }

    #[test]
    fn the_marker_scan_finds_the_first_scan_and_the_end() {
        // SOI, APP0 (len 4), SOS (len 3) + data with stuffing and RST, EOI, trailer.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xDA, 0, 3, 9, 0x12, 0xFF, 0x00, 0x34, 0xFF,
            0xD3, 0x56, 0xFF, 0xD9, 0xAA, 0xBB,
        ];
        let layout = scan_markers(&jpeg).expect("scan");
        assert_eq!(
            layout,
            Layout {
                first_sos: 8,
                dht_before_sos: false,
                scan_ends: vec![20],
                end: 22
            }
        );
        // Cut anywhere before the EOI: refused.
        for cut in 0..22 {
            assert!(scan_markers(&jpeg[..cut]).is_err(), "cut at {cut}");
        }
        // A segment longer than the data.
        assert!(scan_markers(&[0xFF, 0xD8, 0xFF, 0xE0, 0x10, 0, 1, 2, 0xFF, 0xD9]).is_err());
        // No scan at all.
        assert!(scan_markers(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
    }

    #[test]
    fn cmyk_ink_converts_to_rgb() {
        let px = vec![0, 255, 0, 0, 0, 0, 0, 255, 128, 0, 0, 0];
        let img = to_rgb(px, 3, 1, PixelFormat::CMYK32).expect("rgb");
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 255]);
        assert_eq!(img.get_pixel(1, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(2, 0).0, [127, 255, 255]);
        assert!(to_rgb(vec![0; 11], 3, 1, PixelFormat::CMYK32).is_err());
    }
}
