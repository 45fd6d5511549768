//! Every process a `command` source started, however far it went: its children,
//! and children that left its process group (`setsid()`, a double fork).
//!
//! Stopping the program's process group is not enough: a child that calls
//! `setsid()` leaves the group, and one whose parent exits is re-parented. So:
//!
//! - the daemon is a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`): orphans of
//!   its programs become its children, not init's, and it reaps them;
//! - every program is started with [`MARKER`]` = <lineage>` in its environment
//!   (the state directory: one daemon per directory), which its descendants
//!   inherit; when a program stops, and when the daemon starts (after a `kill -9`
//!   of an earlier daemon, whose descendants went to init), every process whose
//!   environment carries the marker is killed.
//!
//! A descendant that clears its whole environment escapes the marker; under
//! systemd, `KillMode=control-group` (the default, kept by the shipped unit)
//! still ends it with the service: see docs/deployment.md.

use std::io::Read;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that marks a source's processes.
pub const MARKER: &str = "EDGEHEAD_SOURCE_LINEAGE";

/// Largest environment read from `/proc/<pid>/environ`.
const MAX_ENVIRON: u64 = 1 << 20;

static LINEAGE: OnceLock<String> = OnceLock::new();

/// This daemon's lineage: set once at start ([`adopt`]); without it (a
/// benchmark) the process id.
pub fn lineage() -> String {
    LINEAGE
        .get()
        .cloned()
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// Start of a daemon: become a subreaper, take `lineage` as this daemon's, and
/// kill what an earlier daemon of the same lineage left behind. Returns how many
/// processes were killed.
pub fn adopt(lineage: &str) -> usize {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper: descendants of a command source may outlive it");
    }
    let _ = LINEAGE.set(lineage.to_string());
    let killed = kill_lineage();
    if killed > 0 {
        tracing::warn!(
            killed,
            "stopped processes an earlier edgehead's command source left running"
        );
    }
    killed
}

/// Kill every process carrying this daemon's marker (but this one), reap those
/// that are its children, and reap its other children that already exited
/// (orphans re-parented to it). `keep`: a child not to reap (the running
/// program, reaped by its owner). Returns how many were killed.
pub fn kill_lineage_except(keep: Option<u32>) -> usize {
    let me = std::process::id();
    let needle = format!("{MARKER}={}\0", lineage()).into_bytes();
    let mut killed = Vec::new();
    // A few passes: a process may fork while the others are being killed.
    for _ in 0..5 {
        let found: Vec<u32> = pids()
            .filter(|&p| p != me && Some(p) != keep && !killed.contains(&p))
            .filter(|&p| environ_has(p, &needle))
            .collect();
        if found.is_empty() {
            break;
        }
        for &p in &found {
            // SAFETY: kill(2) of a process that carries our marker.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
        killed.extend(found);
    }
    reap_orphans(me, keep, &killed);
    killed.len()
}

/// Reap the children of this process that already exited (orphans of a
/// program, re-parented here), except `keep` (the running program, reaped by
/// its owner). A running program that leaves orphans behind would otherwise
/// fill the process table with zombies.
pub fn reap_zombies(keep: Option<u32>) {
    reap_orphans(std::process::id(), keep, &[]);
}

/// [`kill_lineage_except`] with nothing kept.
pub fn kill_lineage() -> usize {
    kill_lineage_except(None)
}

/// Reap the children of `me` that are zombies, and wait briefly for the
/// `killed` ones that are its children; never `keep`.
fn reap_orphans(me: u32, keep: Option<u32>, killed: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let waiting: Vec<u32> = pids()
            .filter(|&p| Some(p) != keep)
            .filter_map(|p| stat(p).map(|s| (p, s)))
            .filter(|(_, (ppid, _))| *ppid == me)
            .filter_map(|(p, (_, state))| {
                if state == 'Z' {
                    // SAFETY: a zombie child of ours, not owned by a `Child`.
                    unsafe { libc::waitpid(p as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
                    None
                } else {
                    killed.contains(&p).then_some(p)
                }
            })
            .collect();
        if waiting.is_empty() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The process ids in `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
}

/// Whether process `pid`'s environment holds `needle` (`NAME=value\0`).
fn environ_has(pid: u32, needle: &[u8]) -> bool {
    let mut env = Vec::new();
    let read = std::fs::File::open(format!("/proc/{pid}/environ"))
        .and_then(|f| f.take(MAX_ENVIRON).read_to_end(&mut env));
    if read.is_err() {
        return false;
    }
    // Entries are NUL-separated; match whole entries only.
    env.split_inclusive(|&b| b == 0).any(|e| e == needle)
}

/// `(parent pid, state)` of process `pid`, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: read after
    // the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_line_is_read_after_the_command_name() {
        let me = std::process::id();
        let (ppid, state) = stat(me).expect("our own stat");
        assert!(ppid > 0);
        assert!("RSD".contains(state), "{state}");
    }

    #[test]
    fn a_process_started_with_the_marker_is_found_and_killed() {
        let lineage = format!("unit-test-{}", fastrand::u64(..));
        let needle = format!("{MARKER}={lineage}\0").into_bytes();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER, &lineage)
            .spawn()
            .expect("sleep");
        let pid = child.id();
        // Until exec, the child's environment is still a copy of ours.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !environ_has(pid, &needle) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(environ_has(pid, &needle));
        assert!(!environ_has(pid, b"EDGEHEAD_SOURCE_LINEAGE=other\0"));
        assert!(!environ_has(std::process::id(), &needle));
        // SAFETY: our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
}
