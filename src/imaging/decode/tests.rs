//! Tests of the whole decode path: real fixtures, truncation, MJPEG tables, EXIF
//! orientation, alpha, memory budget, fuzzing.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

use super::jpeg::ANNEX_K_TABLES;
use super::*;

fn limits(max_side: u32, budget_bytes: u64) -> ImageLimits {
    ImageLimits {
        max_side,
        budget_bytes,
    }
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(img)
        .expect("encode");
    bytes
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .expect("encode");
    bytes
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).expect("fixture")
}

const FIXTURES: [&str; 6] = [
    "hat-1.jpg",
    "hat-2.jpg",
    "pants-1.jpg",
    "pants-2.jpg",
    "shoes-1.jpg",
    "shoes-2.jpg",
];

/// Four 8-aligned quadrants: red, green, blue, white.
fn quadrants(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| match (x < w / 2, y < h / 2) {
        (true, true) => Rgb([255, 0, 0]),
        (false, true) => Rgb([0, 255, 0]),
        (true, false) => Rgb([0, 0, 255]),
        (false, false) => Rgb([255, 255, 255]),
    })
}

fn close(a: [u8; 3], b: [u8; 3], tolerance: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= tolerance)
}

/// The marker segments before the first SOS: (offset of 0xFF, code, bytes in all).
fn segments(jpeg: &[u8]) -> Vec<(usize, u8, usize)> {
    let mut out = Vec::new();
    let mut pos = 2;
    while jpeg[pos + 1] != 0xDA {
        assert_eq!(jpeg[pos], 0xFF, "segment at {pos}");
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]])) + 2;
        out.push((pos, jpeg[pos + 1], len));
        pos += len;
    }
    out
}

/// `jpeg` without its segments of marker `code` (before the first SOS).
fn strip(jpeg: &[u8], code: u8) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    for (at, c, len) in segments(jpeg).into_iter().rev() {
        if c == code {
            out.drain(at..at + len);
        }
    }
    out
}

/// `jpeg` with `segment` right after its SOI.
fn after_soi(jpeg: &[u8], segment: &[u8]) -> Vec<u8> {
    [&jpeg[..2], segment, &jpeg[2..]].concat()
}

/// Offset of the entropy-coded data of the first scan, and of the EOI.
fn entropy_range(jpeg: &[u8]) -> (usize, usize) {
    let (at, _, _) = *segments(jpeg).last().expect("segments");
    let sos = at + segments(jpeg).last().expect("segments").2;
    let len = usize::from(u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]));
    let eoi = jpeg
        .windows(2)
        .rposition(|w| w == [0xFF, 0xD9])
        .expect("EOI");
    (sos + 2 + len, eoi)
}

#[test]
fn default_limits_are_the_config_defaults() {
    let config = crate::config::LearnConfig::default();
    assert_eq!(ImageLimits::default(), ImageLimits::from_config(&config));
    assert_eq!(ImageLimits::default(), limits(8192, 64 * 1024 * 1024));
    let config = crate::config::LearnConfig {
        max_image_side: 100,
        decode_budget_mib: 3,
        ..config
    };
    assert_eq!(ImageLimits::from_config(&config), limits(100, 3 << 20));
}

#[test]
fn decodes_a_jpeg_close_to_its_source() {
    let src = RgbImage::from_pixel(64, 48, Rgb([200, 30, 90]));
    let img = decode_image(&jpeg(&src), &ImageLimits::default()).expect("decode");
    assert_eq!(img.dimensions(), (64, 48));
    let p = img.get_pixel(10, 10).0;
    assert!(close(p, [200, 30, 90], 3), "{p:?}");
}

#[test]
fn refuses_garbage_and_oversized_images() {
    let l = ImageLimits::default();
    assert!(matches!(
        decode_image(b"hello world", &l),
        Err(DecodeError::UnknownFormat)
    ));
    assert!(matches!(
        decode_image(b"", &l),
        Err(DecodeError::UnknownFormat)
    ));
    let bytes = jpeg(&RgbImage::from_pixel(64, 48, Rgb([1, 2, 3])));
    // A JPEG header followed by noise: an error, not a panic.
    let mut broken = bytes[..bytes.len() / 3].to_vec();
    broken.extend(std::iter::repeat_n(0x55u8, 100));
    assert!(decode_image(&broken, &l).is_err());
    assert!(matches!(
        decode_image(&bytes, &limits(32, 64 << 20)),
        Err(DecodeError::TooLarge {
            width: 64,
            height: 48,
            max: 32
        })
    ));
    let png = png(&DynamicImage::ImageRgb8(RgbImage::new(40, 10)));
    assert!(matches!(
        decode_image(&png, &limits(32, 64 << 20)),
        Err(DecodeError::TooLarge { width: 40, .. })
    ));
}

#[test]
fn a_grey_jpeg_decodes_to_equal_channels() {
    let src = image::GrayImage::from_fn(32, 16, |x, _| image::Luma([(x * 8) as u8]));
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 95)
        .encode_image(&src)
        .expect("encode");
    let img = decode_image(&bytes, &ImageLimits::default()).expect("decode");
    for (x, y, p) in img.enumerate_pixels() {
        let [r, g, b] = p.0;
        assert!(r == g && g == b, "{p:?}");
        let want = src.get_pixel(x, y).0[0];
        assert!(
            (i32::from(r) - i32::from(want)).abs() <= 4,
            "{x},{y}: {r} vs {want}"
        );
    }
}

#[test]
fn the_fixtures_decode_like_the_old_decoder() {
    for name in FIXTURES {
        let bytes = fixture(name);
        let ours = decode_image(&bytes, &ImageLimits::default()).expect(name);
        let old = image::load_from_memory(&bytes).expect(name).into_rgb8();
        assert_eq!(ours.dimensions(), old.dimensions(), "{name}");
        let diffs: Vec<i32> = ours
            .as_raw()
            .iter()
            .zip(old.as_raw())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        let max = diffs.iter().copied().max().unwrap_or(0);
        // IDCT rounding differs a little between decoders (measured: mean < 0.1, max 4).
        assert!(mean < 0.25 && max <= 6, "{name}: mean {mean:.3}, max {max}");
    }
}

#[test]
fn truncated_jpegs_are_refused() {
    for name in FIXTURES {
        let bytes = fixture(name);
        let (data, _) = entropy_range(&bytes);
        // Cut: at half, at a fifth, right after the SOS header, just before the EOI.
        let cuts = [bytes.len() / 2, bytes.len() / 5, data, bytes.len() - 2];
        // Cut inside the scan with the EOI put back: the decoder meets the padding
        // after the scan, not the zeros it would read after a marker.
        let eoi_cuts = [bytes.len() / 2, bytes.len() / 5, data, bytes.len() - 40];
        let truncated = cuts.iter().map(|&cut| bytes[..cut].to_vec()).chain(
            eoi_cuts
                .iter()
                .map(|&cut| [&bytes[..cut], &[0xFF, 0xD9][..]].concat()),
        );
        for (cut, truncated) in cuts.iter().chain(&eoi_cuts).zip(truncated) {
            let got = decode_image(&truncated, &ImageLimits::default());
            match got {
                Err(DecodeError::Corrupt(text)) => {
                    assert!(text.contains("damaged or incomplete"), "{text}")
                }
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
        }
    }
}

/// Single-bit flips in the entropy-coded data of `hat-1.jpg` that zune-jpeg (the
/// `image` crate's decoder, used before) decodes without an error, and that are
/// refused now: (offset, bit). Found with `find_bit_flips`.
const FLIPS_THE_OLD_DECODER_ACCEPTED: [(usize, u8); 4] = [
    // jpeg-decoder: "failed to decode huffman code".
    (2425, 0),
    (5465, 4),
    // jpeg-decoder: "RES marker found where not allowed".
    (5024, 1),
    // The marker scan: the flip makes a marker whose segment runs past the end.
    (8377, 2),
];

#[test]
fn bit_flips_the_old_decoder_accepted_are_refused() {
    let bytes = fixture("hat-1.jpg");
    for (at, bit) in FLIPS_THE_OLD_DECODER_ACCEPTED {
        let mut flipped = bytes.clone();
        flipped[at] ^= 1 << bit;
        assert!(
            image::load_from_memory(&flipped).is_ok(),
            "the old decoder accepts {at}:{bit}"
        );
        assert!(
            matches!(
                decode_image(&flipped, &ImageLimits::default()),
                Err(DecodeError::Corrupt(_))
            ),
            "{at}:{bit}"
        );
    }
}

#[test]
#[ignore = "search tool: prints the flips for FLIPS_THE_OLD_DECODER_ACCEPTED"]
fn find_bit_flips() {
    let bytes = fixture("hat-1.jpg");
    let (start, end) = entropy_range(&bytes);
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..3000 {
        let (at, bit) = (rng.usize(start..end), rng.u8(0..8));
        let mut flipped = bytes.clone();
        flipped[at] ^= 1 << bit;
        let old = image::load_from_memory(&flipped).is_ok();
        let new = decode_image(&flipped, &ImageLimits::default());
        if old {
            if let Err(e) = new {
                println!("({at}, {bit}), // {e}");
            }
        }
    }
}

#[test]
fn bytes_after_the_eoi_are_ignored() {
    let bytes = jpeg(&quadrants(32, 16));
    let want = decode_image(&bytes, &ImageLimits::default()).expect("decode");
    let mut trailed = bytes.clone();
    trailed.extend_from_slice(&[0u8, 0xFF, 0xD8, 0x12, 0xFF]);
    assert_eq!(
        decode_image(&trailed, &ImageLimits::default()).expect("trailed"),
        want
    );
}

#[test]
fn mjpeg_frames_without_huffman_tables_get_the_annex_k_ones() {
    let src = RgbImage::from_fn(48, 32, |x, y| {
        Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
    });
    let bytes = jpeg(&src);
    let want = decode_image(&bytes, &ImageLimits::default()).expect("with DHT");
    let no_dht = strip(&bytes, 0xC4);
    assert!(no_dht.len() < bytes.len() && !segments(&no_dht).iter().any(|s| s.1 == 0xC4));
    // As a webcam sends it: an AVI1 APP0 instead of JFIF, no DHT.
    let avi1 = after_soi(
        &strip(&no_dht, 0xE0),
        &[
            0xFF, 0xE0, 0, 16, b'A', b'V', b'I', b'1', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    for (what, frame) in [
        ("no DHT, JFIF", no_dht.clone()),
        ("no DHT, AVI1", avi1),
        ("no DHT, no APP0", strip(&no_dht, 0xE0)),
    ] {
        let got = decode_frame(
            &frame,
            0,
            0,
            None,
            RawFormat::Mjpeg,
            &ImageLimits::default(),
        );
        assert_eq!(got.expect(what), want, "{what}");
    }
    // The encoder used the Annex K tables: its DHT segments hold exactly them.
    let dht: Vec<u8> = segments(&bytes)
        .into_iter()
        .filter(|s| s.1 == 0xC4)
        .flat_map(|(at, _, len)| bytes[at + 4..at + len].to_vec())
        .collect();
    for t in &ANNEX_K_TABLES {
        let t = [&[t.class_id][..], &t.counts[..], t.symbols].concat();
        assert!(
            dht.windows(t.len()).any(|w| w == t.as_slice()),
            "table {:02X} not in the encoder's DHT",
            t[0]
        );
    }
}

/// An APP1 Exif segment: "Exif\0\0", a little-endian TIFF header (TIFF 6.0 §2) and
/// one IFD entry, Orientation (0x0112), SHORT, count 1 (EXIF 2.3 §4.6.4).
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0];
    tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0]);
    tiff.extend_from_slice(&value.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let body = [&b"Exif\0\0"[..], &tiff].concat();
    let len = (body.len() + 2) as u16;
    [&[0xFF, 0xE1][..], &len.to_be_bytes(), &body].concat()
}

#[test]
fn exif_orientation_6_turns_the_image_upright() {
    let bytes = jpeg(&quadrants(40, 32));
    let l = ImageLimits::default();
    let upright = decode_image(&bytes, &l).expect("upright");
    let img = decode_image(&after_soi(&bytes, &exif_orientation(6)), &l).expect("rotated");
    assert_eq!(img.dimensions(), (32, 40));
    assert_eq!(img, image::imageops::rotate90(&upright));
    // Rotated 90° clockwise: the red top-left corner is now top-right, blue top-left.
    assert!(close(img.get_pixel(31, 0).0, [255, 0, 0], 8));
    assert!(close(img.get_pixel(0, 0).0, [0, 0, 255], 8));
    assert!(close(img.get_pixel(31, 39).0, [0, 255, 0], 8));

    // 40x30, as in EXIF examples: not a multiple of 8, same rule.
    let bytes = jpeg(&quadrants(40, 30));
    let upright = decode_image(&bytes, &l).expect("upright");
    let img = decode_image(&after_soi(&bytes, &exif_orientation(6)), &l).expect("rotated");
    assert_eq!(img.dimensions(), (30, 40));
    assert_eq!(img, image::imageops::rotate90(&upright));
}

#[test]
fn every_exif_orientation_is_applied() {
    use image::metadata::Orientation;
    let bytes = jpeg(&quadrants(24, 16));
    let l = ImageLimits::default();
    let upright = decode_image(&bytes, &l).expect("upright");
    for value in 1..=8u8 {
        let o = Orientation::from_exif(value).expect("orientation");
        let mut want = DynamicImage::ImageRgb8(upright.clone());
        want.apply_orientation(o);
        let got = decode_image(&after_soi(&bytes, &exif_orientation(value.into())), &l);
        assert_eq!(
            got.expect("decode"),
            want.into_rgb8(),
            "orientation {value}"
        );
    }
    // An invalid value is ignored.
    let got = decode_image(&after_soi(&bytes, &exif_orientation(9)), &l);
    assert_eq!(got.expect("decode"), upright);
}

#[test]
fn png_transparency_is_composed_onto_white() {
    let l = ImageLimits::default();
    let white = RgbImage::from_pixel(4, 3, Rgb([255, 255, 255]));
    // Hidden colours under alpha 0: white whatever they are.
    let hidden = RgbaImage::from_fn(4, 3, |x, y| Rgba([(x * 60) as u8, (y * 90) as u8, 7, 0]));
    let got = decode_image(&png(&DynamicImage::ImageRgba8(hidden)), &l).expect("hidden");
    assert_eq!(got, white);
    // Opaque RGBA: the same as its RGB copy.
    let rgb = RgbImage::from_fn(4, 3, |x, y| Rgb([(x * 60) as u8, (y * 90) as u8, 7]));
    let opaque = DynamicImage::ImageRgb8(rgb.clone()).to_rgba8();
    let got = decode_image(&png(&DynamicImage::ImageRgba8(opaque)), &l).expect("opaque");
    assert_eq!(got, rgb);
    assert_eq!(
        decode_image(&png(&DynamicImage::ImageRgb8(rgb.clone())), &l).expect("rgb"),
        rgb
    );
    // Half alpha blends: black at 128/255 over white is 127.
    let half = RgbaImage::from_pixel(2, 2, Rgba([0, 0, 0, 128]));
    let got = decode_image(&png(&DynamicImage::ImageRgba8(half)), &l).expect("half");
    assert_eq!(got.get_pixel(0, 0).0, [127, 127, 127]);
    let half = RgbaImage::from_pixel(2, 2, Rgba([200, 100, 0, 128]));
    let got = decode_image(&png(&DynamicImage::ImageRgba8(half)), &l).expect("half");
    assert_eq!(got.get_pixel(0, 0).0, [227, 177, 127]);
    // 16 bits and grey with alpha, the same rules.
    let hidden16 = image::ImageBuffer::<Rgba<u16>, _>::from_pixel(3, 2, Rgba([9, 65535, 3, 0]));
    let got = decode_image(&png(&DynamicImage::ImageRgba16(hidden16)), &l).expect("16");
    assert_eq!(got, RgbImage::from_pixel(3, 2, Rgb([255, 255, 255])));
    let opaque16 =
        image::ImageBuffer::<Rgba<u16>, _>::from_pixel(3, 2, Rgba([257 * 10, 257 * 20, 0, 65535]));
    let got = decode_image(&png(&DynamicImage::ImageRgba16(opaque16)), &l).expect("16");
    assert_eq!(got, RgbImage::from_pixel(3, 2, Rgb([10, 20, 0])));
    let la = image::ImageBuffer::<image::LumaA<u8>, _>::from_fn(2, 1, |x, _| {
        image::LumaA([50, if x == 0 { 0 } else { 255 }])
    });
    let got = decode_image(&png(&DynamicImage::ImageLumaA8(la)), &l).expect("la");
    assert_eq!(got.as_raw(), &[255, 255, 255, 50, 50, 50]);
}

/// Test-only: the largest single allocation made on the current thread, to show
/// that a refused image is refused before its pixels are allocated.
mod allocations {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        // `try_with`: never fails the allocation, even while the thread ends.
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }

    struct Probe;

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static PROBE: Probe = Probe;

    /// `f`'s result and the largest single allocation it made on this thread.
    pub fn largest<T>(f: impl FnOnce() -> T) -> (T, usize) {
        LARGEST.with(|l| l.set(0));
        let out = f();
        (out, LARGEST.with(|l| l.get()))
    }
}

/// Bits of a deflate stream, least significant first (RFC 1951 §3.1.1).
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }
}

/// A zlib stream of `n` zero bytes, without holding them: one dynamic-Huffman block
/// where a match of 258 at distance 1 costs 2 bits (literal 0: `10`, length 258:
/// `0`, end: `11`; distances 1 and 2: `0`, `1`).
fn zlib_zeros(n: u64) -> Vec<u8> {
    let mut b = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // last block
    b.put(2, 2); // dynamic Huffman
    b.put(286 - 257, 5);
    b.put(2 - 1, 5);
    b.put(18 - 4, 4);
    // Code length code lengths in RFC 1951 order: 18 → 2, 2 → 2, 1 → 1.
    let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1];
    for sym in order {
        b.put(
            match sym {
                1 => 1,
                2 | 18 => 2,
                _ => 0,
            },
            3,
        );
    }
    // Their codes: 1 → `0`, 2 → `10`, 18 → `11` (+ 7 bits: zeros − 11).
    let (one, two) = (|b: &mut Bits| b.code(0, 1), |b: &mut Bits| b.code(2, 2));
    let zeros = |b: &mut Bits, count: u32| {
        b.code(3, 2);
        b.put(count - 11, 7);
    };
    two(&mut b); // literal 0
    zeros(&mut b, 138);
    zeros(&mut b, 117); // literals 1..=255
    two(&mut b); // 256, end of block
    zeros(&mut b, 28); // 257..=284
    one(&mut b); // 285, length 258
    one(&mut b); // distance codes 0 and 1
    one(&mut b);
    b.code(2, 2); // literal 0
    let mut left = n - 1;
    while left >= 258 {
        b.code(0, 1); // length 258
        b.code(0, 1); // distance 1
        left -= 258;
    }
    for _ in 0..left {
        b.code(2, 2);
    }
    b.code(3, 2); // end of block
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    // Adler-32 of zeros: a = 1, b = n (RFC 1950).
    let adler = ((n % 65521) << 16) as u32 | 1;
    b.out.extend_from_slice(&adler.to_be_bytes());
    b.out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// An all-zero (so fully transparent) 16-bit RGBA PNG, built without the pixels.
fn zero_rgba16_png(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let body = [kind, data].concat();
        [
            &(data.len() as u32).to_be_bytes()[..],
            &body,
            &crc32(&body).to_be_bytes(),
        ]
        .concat()
    };
    let ihdr = [
        &width.to_be_bytes()[..],
        &height.to_be_bytes(),
        &[16, 6, 0, 0, 0],
    ]
    .concat();
    // Each line: a filter byte, then 8 bytes per pixel.
    let raw = u64::from(height) * (1 + u64::from(width) * 8);
    [
        &PNG_SIGNATURE[..],
        &chunk(b"IHDR", &ihdr),
        &chunk(b"IDAT", &zlib_zeros(raw)),
        &chunk(b"IEND", &[]),
    ]
    .concat()
}

#[test]
fn a_huge_16_bit_png_is_refused_before_its_pixels_are_allocated() {
    // The builder makes valid PNGs: a small one decodes (transparent: white).
    let small = decode_image(&zero_rgba16_png(300, 7), &ImageLimits::default());
    assert_eq!(
        small.expect("small"),
        RgbImage::from_pixel(300, 7, Rgb([255, 255, 255]))
    );
    let png = zero_rgba16_png(8192, 8192);
    assert!(png.len() < 600_000, "{} bytes", png.len());
    let (got, largest) = allocations::largest(|| decode_image(&png, &ImageLimits::default()));
    match got {
        Err(DecodeError::OverBudget {
            width: 8192,
            height: 8192,
            needed,
            budget,
        }) => {
            // 8 bytes per pixel as decoded, plus 3 for the RGB result.
            assert_eq!(needed, 8192 * 8192 * 11);
            assert_eq!(budget, 64 << 20);
        }
        other => panic!("{other:?}"),
    }
    assert!(largest < 1 << 20, "largest allocation {largest} bytes");
    let text = DecodeError::OverBudget {
        width: 8192,
        height: 8192,
        needed: 8192 * 8192 * 11,
        budget: 64 << 20,
    }
    .to_string();
    assert!(
        text.contains("learn.decode_budget_mib") && text.contains("704.0 MiB"),
        "{text}"
    );
}

#[test]
fn a_jpeg_header_declaring_8192_square_without_data_is_refused_cheaply() {
    let bytes = jpeg(&quadrants(16, 16));
    let (data, _) = entropy_range(&bytes);
    let mut header = bytes[..data].to_vec();
    let (sof, _, _) = *segments(&bytes).iter().find(|s| s.1 == 0xC0).expect("SOF0");
    header[sof + 5..sof + 9].copy_from_slice(&[0x20, 0, 0x20, 0]);
    let (got, largest) = allocations::largest(|| decode_image(&header, &ImageLimits::default()));
    assert!(
        matches!(
            got,
            Err(DecodeError::Corrupt(_) | DecodeError::OverBudget { .. })
        ),
        "{got:?}"
    );
    assert!(largest < 1 << 20, "largest allocation {largest} bytes");
    // With the data of the 16x16 image and an EOI, it is still no 8192x8192 image.
    header.extend_from_slice(&bytes[data..]);
    let (got, largest) = allocations::largest(|| decode_image(&header, &limits(8192, 1 << 20)));
    assert!(got.is_err(), "{:?}", got.map(|i| i.dimensions()));
    assert!(largest <= 1 << 20, "largest allocation {largest} bytes");
}

#[test]
fn a_jpeg_above_the_budget_is_decoded_smaller() {
    let (w, h) = (4096, 4096);
    let src = RgbImage::from_fn(w, h, |x, y| match ((x / 512) + (y / 512)) % 3 {
        0 => Rgb([220, 40, 40]),
        1 => Rgb([40, 200, 60]),
        _ => Rgb([30, 60, 210]),
    });
    let bytes = jpeg(&src);
    drop(src);
    let budget = 16 << 20;
    let img = decode_image(&bytes, &limits(8192, budget)).expect("scaled");
    let (sw, sh) = img.dimensions();
    assert!(sw <= w / 2 && sh <= h / 2, "{sw}x{sh}");
    assert!(
        [2048, 1024, 512].contains(&sw) && sw == sh,
        "{sw}x{sh}: 1/2, 1/4 or 1/8"
    );
    assert!(u64::from(sw) * u64::from(sh) * 3 <= budget);
    // Still the same picture: block (0, 0) is red, (1, 0) green, at any scale.
    let cell = sw / 8;
    assert!(close(
        img.get_pixel(cell / 2, cell / 2).0,
        [220, 40, 40],
        12
    ));
    assert!(close(
        img.get_pixel(cell + cell / 2, cell / 2).0,
        [40, 200, 60],
        12
    ));

    // A small image over a tiny budget even at 1/8: refused, naming the setting.
    let small = jpeg(&quadrants(64, 64));
    match decode_image(&small, &limits(8192, 100)) {
        Err(e @ DecodeError::OverBudget { .. }) => {
            assert!(e.to_string().contains("learn.decode_budget_mib"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

/// A baseline 8x8 CMYK JPEG with an Adobe APP14 segment (transform 0), every block
/// flat: `stored` holds the four values as Adobe stores them (inverted: 255 = no ink).
/// Its DHT is left out, so the Annex K tables are added by the decoder.
fn cmyk_jpeg(stored: [u8; 4]) -> Vec<u8> {
    let codes = |t: &super::jpeg::HuffmanTable| {
        let mut codes = std::collections::HashMap::new();
        let (mut code, mut k) = (0u32, 0);
        for (i, &count) in t.counts.iter().enumerate() {
            for _ in 0..count {
                codes.insert(t.symbols[k], (code, i as u32 + 1));
                code += 1;
                k += 1;
            }
            code <<= 1;
        }
        codes
    };
    let (dc, ac) = (codes(&ANNEX_K_TABLES[0]), codes(&ANNEX_K_TABLES[1]));
    let mut bits: Vec<bool> = Vec::new();
    let mut put = |value: u32, len: u32| {
        bits.extend((0..len).rev().map(|i| value >> i & 1 == 1));
    };
    for v in stored {
        // DC of a flat block: 8 × (v − 128), quantized by 1.
        let diff = 8 * (i32::from(v) - 128);
        let size = 32 - diff.unsigned_abs().leading_zeros();
        let (code, len) = dc[&(size as u8)];
        put(code, len);
        let extra = if diff < 0 {
            diff + (1 << size) - 1
        } else {
            diff
        };
        put(extra as u32, size);
        let (code, len) = ac[&0x00]; // end of block
        put(code, len);
    }
    while !bits.len().is_multiple_of(8) {
        bits.push(true);
    }
    let mut data = Vec::new();
    for byte in bits.chunks(8) {
        let byte = byte.iter().fold(0u8, |a, &b| a << 1 | u8::from(b));
        data.push(byte);
        if byte == 0xFF {
            data.push(0);
        }
    }
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(&[
        0xFF, 0xEE, 0, 14, b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, 0,
    ]);
    out.extend_from_slice(&[0xFF, 0xDB, 0, 67, 0]);
    out.extend_from_slice(&[1; 64]);
    out.extend_from_slice(&[0xFF, 0xC0, 0, 20, 8, 0, 8, 0, 8, 4]);
    for id in 1..=4 {
        out.extend_from_slice(&[id, 0x11, 0]);
    }
    out.extend_from_slice(&[0xFF, 0xDA, 0, 14, 4]);
    for id in 1..=4 {
        out.extend_from_slice(&[id, 0x00]);
    }
    out.extend_from_slice(&[0, 63, 0]);
    out.extend_from_slice(&data);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[test]
fn adobe_cmyk_jpegs_decode_to_their_colours() {
    let l = ImageLimits::default();
    for (stored, want) in [
        // Magenta ink only.
        ([255, 0, 255, 255], [255, 0, 255]),
        // No ink: white; full black ink: black.
        ([255, 255, 255, 255], [255, 255, 255]),
        ([255, 255, 255, 0], [0, 0, 0]),
        // Half cyan: r = c·k/255 on the stored values.
        ([128, 255, 255, 255], [128, 255, 255]),
    ] {
        let img = decode_image(&cmyk_jpeg(stored), &l).expect("cmyk");
        assert_eq!(img.dimensions(), (8, 8));
        let got = img.get_pixel(3, 3).0;
        assert!(close(got, want, 1), "{stored:?}: {got:?}, want {want:?}");
    }
}

#[test]
fn fuzzed_jpegs_and_pngs_never_panic_and_stay_within_the_limits() {
    let src = RgbImage::from_fn(48, 32, |x, y| {
        Rgb([(x * 5) as u8, (y * 7) as u8, ((x * y) % 256) as u8])
    });
    let rgba = RgbaImage::from_fn(24, 16, |x, y| {
        Rgba([(x * 9) as u8, (y * 13) as u8, 90, (x * 10) as u8])
    });
    let seeds = [
        jpeg(&src),
        strip(&jpeg(&src), 0xC4),
        png(&DynamicImage::ImageRgba8(rgba)),
    ];
    let l = limits(64, 16 << 10);
    let mut rng = fastrand::Rng::with_seed(0x5EED);
    // A fixed number of tries, not a time budget: the same inputs on every
    // machine, however loaded.
    let (mut ok, mut tried) = (0, 0);
    while tried < 1_500 {
        let mut bytes = seeds[tried % seeds.len()].clone();
        tried += 1;
        for _ in 0..rng.usize(1..=3) {
            let at = rng.usize(..bytes.len().max(1));
            match rng.u8(0..5) {
                0 => {
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= 1 << rng.u8(0..8);
                    }
                }
                1 => bytes.truncate(at),
                2 => {
                    let n = rng.usize(1..=8);
                    let junk: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                    let tail = bytes.split_off(at.min(bytes.len()));
                    bytes.extend(junk);
                    bytes.extend(tail);
                }
                3 => {
                    for b in bytes.iter_mut().skip(at).take(rng.usize(1..=8)) {
                        *b = rng.u8(..);
                    }
                }
                _ => {
                    // Large values where sizes and lengths live.
                    if let Some(b) = bytes.get_mut(at) {
                        *b = [0x00, 0x7F, 0x80, 0xFF][rng.usize(..4)];
                    }
                }
            }
        }
        match decode_image(&bytes, &l) {
            Ok(img) => {
                ok += 1;
                let (w, h) = img.dimensions();
                assert!(w <= 64 && h <= 64, "{w}x{h}");
                assert!(u64::from(w) * u64::from(h) * 3 <= l.budget_bytes);
            }
            Err(e) => assert!(!e.to_string().contains("panicked"), "{e}"),
        }
    }
    assert!(ok > 0, "no mutation decoded at all in {tried} tries");
}

#[test]
fn decodes_recorded_mjpeg_and_yuyv_buffers() {
    let l = ImageLimits::default();
    let src = RgbImage::from_fn(16, 8, |x, _| Rgb([(x * 16) as u8, 128, 64]));
    let img = decode_frame(&jpeg(&src), 16, 8, None, RawFormat::Mjpeg, &l).expect("mjpeg");
    assert_eq!(img.dimensions(), (16, 8));
    // Mid-grey YUYV (Y=126, neutral chroma) is grey in RGB.
    let yuyv: Vec<u8> = std::iter::repeat_n([126u8, 128, 126, 128], 8 * 8)
        .flatten()
        .collect();
    let img = decode_frame(&yuyv, 16, 8, None, RawFormat::Yuyv, &l).expect("yuyv");
    let p = img.get_pixel(5, 5).0;
    assert!(
        p[0] == p[1] && p[1] == p[2] && (127..=130).contains(&p[0]),
        "{p:?}"
    );
    let nv12: Vec<u8> = std::iter::repeat_n(126u8, 16 * 8)
        .chain(std::iter::repeat_n(128u8, 16 * 4))
        .collect();
    assert_eq!(
        decode_frame(&nv12, 16, 8, None, RawFormat::Nv12, &l).expect("nv12"),
        img
    );
    let gray = decode_frame(&[7u8; 16 * 8], 16, 8, None, RawFormat::Gray, &l).expect("gray");
    assert_eq!(gray.get_pixel(0, 0).0, [7, 7, 7]);
    let bgr = [1, 2, 3].repeat(16 * 8);
    let bgr = decode_frame(&bgr, 16, 8, None, RawFormat::Bgr, &l).expect("bgr");
    assert_eq!(bgr.get_pixel(0, 0).0, [3, 2, 1]);
}

#[test]
fn corrupt_short_and_oversized_camera_buffers_are_errors() {
    let l = ImageLimits::default();
    let mjpeg = [0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3];
    assert!(decode_frame(&mjpeg, 16, 8, None, RawFormat::Mjpeg, &l).is_err());
    for format in [
        RawFormat::Yuyv,
        RawFormat::Nv12,
        RawFormat::Rgb,
        RawFormat::Gray,
    ] {
        assert!(decode_frame(&[0u8; 10], 16, 8, None, format, &l).is_err());
        assert!(decode_frame(&[0u8; 10], 0, 8, None, format, &l).is_err());
    }
    let yuyv = [128u8; 16 * 8 * 2];
    assert!(matches!(
        decode_frame(&yuyv, 16, 8, None, RawFormat::Yuyv, &limits(8, 1 << 20)),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(
        decode_frame(&yuyv, 16, 8, None, RawFormat::Yuyv, &limits(64, 100)),
        Err(DecodeError::OverBudget { .. })
    ));
}
