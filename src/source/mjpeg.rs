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
///
/// Linear in the bytes pushed: the walk through a frame resumes where the last
/// push left it, skipped bytes only move a cursor, and the buffer is compacted once
/// per call that finds no frame.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Where the current frame (or the search for one) starts in `buf`.
    start: usize,
    /// Where the walk through the current frame goes on, relative to `start`;
    /// `None` while looking for an SOI.
    resume: Option<Resume>,
    /// Longest frame accepted, in bytes; a longer "frame" is dropped as garbage.
    max_frame: usize,
    /// Bytes skipped outside frames (garbage, or frames over `max_frame`).
    pub skipped: u64,
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

/// Where a walk stopped for want of bytes.
#[derive(Debug, Clone, Copy)]
enum Resume {
    /// A marker is expected at this offset.
    Marker(usize),
    /// Entropy-coded data, scanned up to this offset.
    Entropy(usize),
}

/// What the walk from an SOI found.
enum Walk {
    /// A complete image ends here (exclusive).
    End(usize),
    /// More bytes are needed; go on from here.
    Incomplete(Resume),
    /// Not a well-formed image from this SOI.
    Broken,
}

impl Splitter {
    /// A splitter for frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            resume: None,
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
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The next complete JPEG image in the stream, if one has arrived.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            let resume = match self.resume {
                Some(r) => r,
                None => match find_soi(&self.buf[self.start..]) {
                    Some(i) => {
                        self.skipped += i as u64;
                        self.start += i;
                        Resume::Marker(2)
                    }
                    None => {
                        // Keep a trailing 0xFF, which may begin the next SOI.
                        let keep = usize::from(self.buf.last() == Some(&0xFF));
                        let gone = self.buf.len() - self.start - keep;
                        self.skipped += gone as u64;
                        self.start += gone;
                        self.compact();
                        return None;
                    }
                },
            };
            let frame = &self.buf[self.start..];
            match walk(frame, resume) {
                Walk::End(end) if end <= self.max_frame => {
                    let f = frame[..end].to_vec();
                    self.start += end;
                    self.resume = None;
                    return Some(f);
                }
                Walk::Incomplete(r) if frame.len() <= self.max_frame => {
                    self.resume = Some(r);
                    self.compact();
                    return None;
                }
                // Too long, or broken: skip this SOI and look for the next one.
                _ => {
                    self.start += 2;
                    self.skipped += 2;
                    self.resume = None;
                }
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

/// Walk an image starting with SOI at offset 0, from `resume`.
fn walk(b: &[u8], resume: Resume) -> Walk {
    let mut pos = match resume {
        Resume::Marker(p) => p,
        Resume::Entropy(p) => match next_marker(b, p) {
            Ok(m) => m,
            Err(scanned) => return Walk::Incomplete(Resume::Entropy(scanned)),
        },
    };
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while b.get(pos) == Some(&0xFF) && b.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&ff), Some(&code)) = (b.get(pos), b.get(pos + 1)) else {
            return Walk::Incomplete(Resume::Marker(pos));
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
                    return Walk::Incomplete(Resume::Marker(pos));
                };
                if len < 2 {
                    return Walk::Broken;
                }
                let end = pos + 2 + len;
                if end > b.len() {
                    return Walk::Incomplete(Resume::Marker(pos));
                }
                pos = end;
                if code == SOS {
                    match next_marker(b, pos) {
                        Ok(m) => pos = m,
                        Err(scanned) => return Walk::Incomplete(Resume::Entropy(scanned)),
                    }
                }
            }
        }
    }
}

/// In entropy-coded data from `pos`, the offset of the next marker: an 0xFF not
/// followed by 0x00 (stuffing), an RSTn or another 0xFF (fill). `Err(offset)`: none
/// yet; scanning may go on from `offset`.
fn next_marker(b: &[u8], mut pos: usize) -> Result<usize, usize> {
    loop {
        let Some(i) = b.get(pos..).and_then(|r| r.iter().position(|&x| x == 0xFF)) else {
            return Err(b.len().max(pos));
        };
        let i = pos + i;
        match b.get(i + 1) {
            None => return Err(i),
            Some(0x00 | 0xD0..=0xD7 | 0xFF) => pos = i + 1,
            Some(_) => return Ok(i),
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
    fn a_frame_dribbled_in_tiny_reads_is_walked_once_not_again_per_read() {
        // 1 MiB of entropy data arriving 16 bytes at a time. The walk must resume
        // where it stopped (walking from the SOI at every read is quadratic: ~30
        // billion byte steps here).
        let a = jpeg([9, 9, 9]);
        let sos = a.windows(2).position(|w| w == [0xFF, SOS]).expect("sos");
        let header_len = usize::from(u16::from_be_bytes([a[sos + 2], a[sos + 3]]));
        let mut stream = a[..sos + 2 + header_len].to_vec();
        stream.extend(std::iter::repeat_n(0x11u8, 1 << 20));
        let mut s = Splitter::new(4 << 20);
        for part in stream.chunks(16) {
            s.push(part);
            assert_eq!(s.next_frame(), None);
            // The scan stands at the end of what has arrived.
            assert!(
                matches!(s.resume, Some(Resume::Entropy(p)) if p == s.pending())
                    || s.pending() <= sos + 2 + header_len,
                "{:?} at {}",
                s.resume,
                s.pending()
            );
        }
        s.push(&[0xFF, EOI]);
        assert_eq!(s.next_frame().map(|f| f.len()), Some(stream.len() + 2));
        // A flood of stray SOIs: each is skipped by moving a cursor.
        let mut f = Splitter::new(1 << 20);
        f.push(&[0xFF, SOI, 0xFF, 0x00].repeat(1 << 16));
        assert_eq!(f.next_frame(), None);
        assert!(f.pending() < 4);
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
