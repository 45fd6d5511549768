//! Splitting an MJPEG byte stream (JPEG images one after another, as `rpicam-vid
//! --codec mjpeg -o -`, `ffmpeg -f mjpeg pipe:1` and GStreamer's `jpegenc ! fdsink`
//! write them) into single JPEG images.
//!
//! The split follows the JPEG structure (ITU-T T.81 B.1): from an SOI marker,
//! marker segments are skipped by their length, entropy-coded data after an SOS
//! runs to the next marker that is not a stuffed `0xFF00` or an RSTn, and the image
//! ends at its EOI. So an EOI-like byte pair inside a segment (an EXIF thumbnail)
//! does not end the frame, and bytes between frames (a program's chatter, a lost
//! packet) are skipped. Whether a frame decodes is for the decoder to say.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The newest frame a reader thread has split off its stream, or why there will be
/// no more: newest frame wins, and only the frame taken is ever decoded.
#[derive(Debug, Default)]
pub struct FrameSlot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    frame: Option<Vec<u8>>,
    /// The stream ended (end of data or a read error), with the reason.
    ended: Option<String>,
    /// The source is being dropped: the reader stops at its next read.
    stopped: bool,
    /// Frames replaced before anyone took them.
    replaced: u64,
}

/// What [`FrameSlot::take`] found.
#[derive(Debug, PartialEq)]
pub enum Taken {
    Frame(Vec<u8>),
    Ended(String),
    TimedOut,
}

impl FrameSlot {
    /// Put the newest frame, replacing one not taken yet.
    pub fn put(&self, frame: Vec<u8>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.frame.replace(frame).is_some() {
            s.replaced += 1;
        }
        self.cv.notify_all();
    }

    /// Mark the stream as ended.
    pub fn end(&self, why: String) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.ended.get_or_insert(why);
        self.cv.notify_all();
    }

    /// Ask the reader to stop.
    pub fn stop(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stopped = true;
    }

    fn stopped(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stopped
    }

    /// Wait up to `timeout` for a frame (a frame waiting is taken before the end).
    pub fn take(&self, timeout: Duration) -> Taken {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut s, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |s| s.frame.is_none() && s.ended.is_none())
            .unwrap_or_else(|p| p.into_inner());
        match (s.frame.take(), &s.ended) {
            (Some(f), _) => Taken::Frame(f),
            (None, Some(why)) => Taken::Ended(why.clone()),
            (None, None) => Taken::TimedOut,
        }
    }
}

/// Read `input` on a thread named `name`, split it into JPEG images of at most
/// `max_frame` bytes, and keep the newest in `slot`. The thread ends at the end of
/// the stream, on a read error (a read timeout included) or once the slot is
/// stopped, and says why in the slot.
pub fn spawn_reader(
    name: &str,
    mut input: impl Read + Send + 'static,
    slot: Arc<FrameSlot>,
    max_frame: usize,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("{name}-read"))
        .spawn(move || {
            let mut splitter = Splitter::new(max_frame);
            let mut buf = vec![0u8; 64 << 10];
            let why = loop {
                if slot.stopped() {
                    break "stopped".to_string();
                }
                match input.read(&mut buf) {
                    Ok(0) => break "the stream ended".to_string(),
                    Ok(n) => {
                        splitter.push(&buf[..n]);
                        let mut newest = None;
                        while let Some(f) = splitter.next_frame() {
                            newest = Some(f);
                        }
                        if let Some(f) = newest {
                            slot.put(f);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break format!("reading the stream failed: {e}"),
                }
            };
            slot.end(why);
        })
        .map(|_| ())
}

/// Accumulates bytes and hands out complete JPEG images.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Longest frame accepted, in bytes; a longer "frame" is dropped as garbage.
    max_frame: usize,
    /// Bytes skipped outside frames (garbage, or frames over `max_frame`).
    pub skipped: u64,
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

/// What the walk from an SOI found.
enum Walk {
    /// A complete image ends here (exclusive).
    End(usize),
    /// More bytes are needed.
    Incomplete,
    /// Not a well-formed image from this SOI.
    Broken,
}

impl Splitter {
    /// A splitter for frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_frame: max_frame.max(4),
            skipped: 0,
        }
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held, waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn skip(&mut self, n: usize) {
        self.buf.drain(..n);
        self.skipped += n as u64;
    }

    /// The next complete JPEG image in the stream, if one has arrived.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            let Some(soi) = find_soi(&self.buf) else {
                // Keep a trailing 0xFF, which may begin the next SOI.
                let keep = usize::from(self.buf.last() == Some(&0xFF));
                self.skip(self.buf.len() - keep);
                return None;
            };
            self.skip(soi);
            match walk(&self.buf) {
                Walk::End(end) if end <= self.max_frame => {
                    let rest = self.buf.split_off(end);
                    return Some(std::mem::replace(&mut self.buf, rest));
                }
                Walk::Incomplete if self.buf.len() <= self.max_frame => return None,
                // Too long, or broken: skip this SOI and look for the next one.
                _ => self.skip(2),
            }
        }
    }
}

/// The offset of the first `FF D8 FF` (an SOI followed by a marker).
fn find_soi(b: &[u8]) -> Option<usize> {
    b.windows(3)
        .position(|w| w[0] == 0xFF && w[1] == SOI && w[2] == 0xFF)
        .or_else(|| {
            // An SOI at the very end, its next marker not read yet.
            let n = b.len();
            (n >= 2 && b[n - 2] == 0xFF && b[n - 1] == SOI).then(|| n - 2)
        })
}

/// Walk an image starting with SOI at offset 0.
fn walk(b: &[u8]) -> Walk {
    let mut pos = 2;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while b.get(pos) == Some(&0xFF) && b.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&ff), Some(&code)) = (b.get(pos), b.get(pos + 1)) else {
            return Walk::Incomplete;
        };
        if ff != 0xFF {
            return Walk::Broken;
        }
        match code {
            EOI => return Walk::End(pos + 2),
            SOI | 0x00 => return Walk::Broken,
            0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let Some(len) = b
                    .get(pos + 2..pos + 4)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                else {
                    return Walk::Incomplete;
                };
                if len < 2 {
                    return Walk::Broken;
                }
                pos += 2 + len;
                if pos > b.len() {
                    return Walk::Incomplete;
                }
                if code == SOS {
                    match next_marker(b, pos) {
                        Some(p) => pos = p,
                        None => return Walk::Incomplete,
                    }
                }
            }
        }
    }
}

/// In entropy-coded data from `pos`, the offset of the next marker: an 0xFF not
/// followed by 0x00 (stuffing), an RSTn or another 0xFF (fill).
fn next_marker(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let i = pos + b.get(pos..)?.iter().position(|&x| x == 0xFF)?;
        match b.get(i + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => pos = i + 1,
            _ => return Some(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(colour: [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(32, 24, image::Rgb(colour));
        let mut out = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .expect("encode");
        out
    }

    #[test]
    fn frames_come_out_whole_however_the_stream_is_cut() {
        let frames = [jpeg([255, 0, 0]), jpeg([0, 255, 0]), jpeg([0, 0, 255])];
        let stream: Vec<u8> = frames.concat();
        for chunk in [1, 7, 100, 4096] {
            let mut s = Splitter::new(1 << 20);
            let mut out = Vec::new();
            for part in stream.chunks(chunk) {
                s.push(part);
                while let Some(f) = s.next_frame() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames, "chunks of {chunk}");
            assert_eq!(s.skipped, 0);
        }
    }

    #[test]
    fn garbage_between_frames_and_broken_frames_are_skipped() {
        let (a, b) = (jpeg([255, 0, 0]), jpeg([0, 0, 255]));
        let mut stream = b"ffmpeg says hello\n\xFF\xD8\x00garbage".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&[0x55; 300]);
        // A frame cut short, then a whole one: the cut one is broken by the next SOI.
        stream.extend_from_slice(&a[..a.len() / 2]);
        stream.extend_from_slice(&b);
        let mut s = Splitter::new(1 << 20);
        s.push(&stream);
        let mut out = Vec::new();
        while let Some(f) = s.next_frame() {
            out.push(f);
        }
        assert_eq!(out, [a, b]);
        assert!(s.skipped >= 300);
    }

    #[test]
    fn an_eoi_inside_a_segment_does_not_end_the_frame() {
        let a = jpeg([10, 200, 30]);
        // An APP1 segment holding an SOI..EOI pair (as an EXIF thumbnail does).
        let app1 = [0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0xFF, 0xD9, 0x00, 0x00];
        let mut with = a[..2].to_vec();
        with.extend_from_slice(&app1);
        with.extend_from_slice(&a[2..]);
        let mut s = Splitter::new(1 << 20);
        s.push(&with);
        assert_eq!(s.next_frame(), Some(with.clone()));
    }

    #[test]
    fn a_frame_over_the_limit_is_dropped_and_memory_stays_bounded() {
        let a = jpeg([1, 2, 3]);
        let mut s = Splitter::new(a.len() - 1);
        s.push(&a);
        assert_eq!(s.next_frame(), None);
        // Endless bytes with no frame in them are not kept.
        for _ in 0..100 {
            s.push(&[0x11; 10_000]);
            assert_eq!(s.next_frame(), None);
        }
        assert!(s.pending() < 10);
    }
}
