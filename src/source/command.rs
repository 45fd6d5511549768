//! The `command` source: a program that writes MJPEG to its standard output.
//!
//! How Frigate reads RTSP (through ffmpeg), and how a Raspberry Pi Camera Module is
//! read on a libcamera-based OS (`rpicam-vid --codec mjpeg -o -`). The program is
//! started without a shell, in a process group of its own, with the parent-death
//! signal set (Linux `PR_SET_PDEATHSIG`), so it goes when edgehead goes, even after
//! `kill -9`. Two threads per program: one reads standard output and splits it
//! into JPEG images ([`super::mjpeg::Splitter`]), keeping only the newest (newest
//! frame wins); one logs standard error, at most [`LOG_LINES`] lines per
//! [`LOG_WINDOW`]. A program that exits, or sends no complete frame for
//! `source.command.frame_timeout_ms`, is a transient failure: the capture loop drops
//! this source (which stops the whole process group: SIGTERM, then SIGKILL after
//! [`STOP_GRACE`], then every descendant that left the group: see
//! [`super::lineage`]) and starts it again after its backoff.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mjpeg::{spawn_reader, FrameSlot, Taken};
use super::{BadFrames, CaptureError, FrameSource, Shot};
use crate::config::CommandConfig;
use crate::imaging::decode::{decode_image, ImageLimits};

/// Lines of the program's standard error logged per window; the rest are counted.
pub const LOG_LINES: u32 = 20;
pub const LOG_WINDOW: Duration = Duration::from_secs(60);
/// How long the program has to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often orphans the running program left are reaped.
pub const REAP_EVERY: Duration = Duration::from_secs(10);

/// A running program and its frames.
pub struct CommandSource {
    name: String,
    child: Child,
    /// The marker value of this program's processes.
    tag: super::lineage::Tag,
    slot: Arc<FrameSlot>,
    timeout: Duration,
    limits: ImageLimits,
    bad_frames: BadFrames,
    last_reap: Instant,
}

impl CommandSource {
    /// Start the program. A program that cannot be started (not found, not
    /// executable) is a transient failure too: it may be installed later, and the
    /// capture loop retries with its backoff.
    pub fn open(
        c: &CommandConfig,
        limits: ImageLimits,
        max_frame_bytes: usize,
    ) -> Result<Self, CaptureError> {
        let name = std::path::Path::new(&c.program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| c.program.clone());
        let mut cmd = Command::new(&c.program);
        // edgehead's own settings (an MQTT password among them) are not the
        // program's business.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("EDGEHEAD") {
                cmd.env_remove(key);
            }
        }
        // Every descendant inherits the marker: see [`super::lineage`].
        let tag = super::lineage::Tag::new();
        cmd.env(super::lineage::MARKER, tag.value());
        cmd.args(&c.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls are made
        // (prctl, getppid, _exit), and nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the call: then go at once.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = super::lineage::spawn_owned(&mut cmd)
            .map_err(|e| CaptureError::Transient(format!("cannot start {}: {e}", c.program)))?;
        let slot = Arc::new(FrameSlot::default());
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(CaptureError::Transient(format!(
                "{name}: no pipe to its output"
            )));
        };
        let spawned = spawn_reader(&name, stdout, slot.clone(), max_frame_bytes)
            .and_then(|()| spawn_logger(&name, stderr));
        if let Err(e) = spawned {
            // Dropping it stops the program.
            drop(Self {
                name,
                child,
                tag,
                slot,
                timeout: Duration::ZERO,
                limits,
                bad_frames: BadFrames::new(BadFrames::STREAM_LIMIT),
                last_reap: Instant::now(),
            });
            return Err(CaptureError::Transient(format!(
                "cannot start a thread: {e}"
            )));
        }
        tracing::info!(program = %name, pid = child.id(), "command source started");
        Ok(Self {
            name,
            child,
            tag,
            slot,
            timeout: Duration::from_millis(c.frame_timeout_ms),
            limits,
            bad_frames: BadFrames::new(BadFrames::STREAM_LIMIT),
            last_reap: Instant::now(),
        })
    }

    /// Why the program stopped sending, with its exit status when it has one.
    fn ended(&mut self, why: &str) -> CaptureError {
        // Give an exiting program a moment, so its status can be reported.
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.exit_status() {
                Some(s) => break Some(s),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                None => break None,
            }
        };
        match status {
            Some(s) => CaptureError::Transient(format!("{} {s}", self.name)),
            None => CaptureError::Transient(format!("{}: {why}", self.name)),
        }
    }

    /// How the program ended, if it has, without reaping it: while its zombie
    /// holds the pid, the process group id cannot be reused by another process,
    /// so signalling the group stays safe until [`CommandSource::stop`] reaps it.
    fn exit_status(&self) -> Option<String> {
        // SAFETY: waitid writes into the siginfo we pass; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_PID with our child's pid; WNOWAIT leaves it waitable.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid and si_status are valid for a SIGCHLD-style siginfo.
        if r != 0 || unsafe { info.si_pid() } == 0 {
            return None;
        }
        let status = unsafe { info.si_status() };
        Some(match info.si_code {
            libc::CLD_EXITED => format!("exited with status {status}"),
            _ => format!("was killed by signal {status}"),
        })
    }

    /// Stop the program's whole process group: SIGTERM, SIGKILL after the grace,
    /// then reap the program (only then may its pid be reused).
    fn stop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals a process group; the group
        // id is ours while the leader is not reaped.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && self.exit_status().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; whatever is left of the group goes.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        super::lineage::disown(self.child.id());
        // And whatever left the group (setsid, double fork).
        let killed = super::lineage::kill_tagged(&self.tag);
        if killed > 0 {
            tracing::info!(program = %self.name, killed, "stopped processes the program had left running outside its group");
        }
    }
}

impl FrameSource for CommandSource {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError> {
        if self.last_reap.elapsed() >= REAP_EVERY {
            self.last_reap = Instant::now();
            super::lineage::reap_zombies();
        }
        loop {
            let bytes = match self.slot.take(self.timeout) {
                Taken::Frame(b) => b,
                Taken::Ended(why) => return Err(self.ended(&why)),
                Taken::TimedOut => {
                    let why = format!(
                        "no frame for {} ms (source.command.frame_timeout_ms)",
                        self.timeout.as_millis()
                    );
                    return Err(self.ended(&why));
                }
            };
            let decoded = decode_image(&bytes, &self.limits);
            if let Some(img) = self.bad_frames.check(&self.name, decoded)? {
                return Ok(Some(img.into()));
            }
        }
    }

    /// Paced by inference: only the newest frame is decoded, when it is wanted.
    fn fps(&self) -> Option<f64> {
        Some(0.0)
    }

    fn interrupter(&self) -> Option<super::Interrupter> {
        let slot = self.slot.clone();
        Some(Box::new(move || slot.end("capture is stopping".into())))
    }
}

impl Drop for CommandSource {
    fn drop(&mut self) {
        self.slot.stop();
        self.stop();
        tracing::info!(program = %self.name, "command source stopped");
    }
}

/// Log standard error line by line, at most [`LOG_LINES`] per [`LOG_WINDOW`].
fn spawn_logger(name: &str, err: impl Read + Send + 'static) -> std::io::Result<()> {
    let program = name.to_string();
    std::thread::Builder::new()
        .name(format!("{name}-stderr"))
        .spawn(move || {
            let mut limit = RateLimit::new(LOG_LINES, LOG_WINDOW);
            let mut lines = BufReader::new(err);
            let mut line = Vec::new();
            loop {
                line.clear();
                // Bounded: a program writing one endless line cannot fill memory.
                match (&mut lines).take(4096).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if text.is_empty() {
                    continue;
                }
                match limit.allow(Instant::now()) {
                    Allow::Yes { suppressed } => {
                        if suppressed > 0 {
                            tracing::warn!(program = %program, suppressed, "more output of the program was not logged");
                        }
                        tracing::warn!(program = %program, "{text}");
                    }
                    Allow::No => {}
                }
            }
        })
        .map(|_| ())
}

/// Whether a line may be logged now, and how many were held back before it.
#[derive(Debug, PartialEq)]
pub enum Allow {
    Yes { suppressed: u64 },
    No,
}

/// At most `max` events per `window`; counts the rest.
#[derive(Debug)]
pub struct RateLimit {
    max: u32,
    window: Duration,
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            start: None,
            used: 0,
            suppressed: 0,
        }
    }

    pub fn allow(&mut self, now: Instant) -> Allow {
        if self
            .start
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.max {
            self.used += 1;
            Allow::Yes {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Allow::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rate_limit_counts_what_it_holds_back() {
        let mut r = RateLimit::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Allow::Yes { suppressed: 0 });
        assert_eq!(r.allow(t0), Allow::Yes { suppressed: 0 });
        assert_eq!(r.allow(t0), Allow::No);
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), Allow::No);
        assert_eq!(
            r.allow(t0 + Duration::from_secs(11)),
            Allow::Yes { suppressed: 2 }
        );
    }

    fn config(program: &str, args: &[&str]) -> CommandConfig {
        CommandConfig {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            frame_timeout_ms: 2000,
            ..CommandConfig::default()
        }
    }

    #[test]
    fn a_missing_program_is_a_transient_failure() {
        let c = config("/nonexistent/edgehead-test-camera", &[]);
        match CommandSource::open(&c, ImageLimits::default(), 1 << 20) {
            Err(CaptureError::Transient(e)) => assert!(e.contains("cannot start"), "{e}"),
            Err(e) => panic!("not transient: {e}"),
            Ok(_) => panic!("started a program that does not exist"),
        }
    }

    #[test]
    fn frames_from_a_program_and_its_exit_are_reported() {
        // `cat` of a JPEG file: one frame, then the output ends.
        let jpeg = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/hat-1.jpg"
        );
        let c = config("cat", &[jpeg]);
        let mut s = CommandSource::open(&c, ImageLimits::default(), 8 << 20).expect("start");
        let shot = s.next_frame().expect("frame").expect("some");
        assert!(shot.image.width() > 0);
        match s.next_frame() {
            Err(CaptureError::Transient(e)) => assert!(e.contains("cat"), "{e}"),
            other => panic!("expected the end to be reported: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_silent_program_times_out_and_is_stopped_with_its_group() {
        let c = CommandConfig {
            frame_timeout_ms: 300,
            ..config("sleep", &["30"])
        };
        let mut s = CommandSource::open(&c, ImageLimits::default(), 1 << 20).expect("start");
        let pid = s.child.id();
        let started = Instant::now();
        match s.next_frame() {
            Err(CaptureError::Transient(e)) => assert!(e.contains("no frame"), "{e}"),
            other => panic!("expected a timeout: {:?}", other.map(|_| ())),
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(s);
        // The process is gone (reaped, so no /proc entry).
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn stopping_one_program_leaves_another_sources_program_running() {
        // Two command sources in one process (two cameras): stopping one must
        // not kill the other's program, nor reap it from under its owner.
        let c = config("sleep", &["30"]);
        let first = CommandSource::open(&c, ImageLimits::default(), 1 << 20).expect("start");
        let second = CommandSource::open(&c, ImageLimits::default(), 1 << 20).expect("start");
        drop(first);
        let pid = second.child.id();
        // Not killed and reaped by the first one's stop.
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(
            second.exit_status().is_none(),
            "the other program ended: {:?}",
            second.exit_status()
        );
        drop(second);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
