//! Every process a `command` source started, however far it went: its children,
//! and children that left its process group (`setsid()`, a double fork).
//!
//! Stopping the program's process group is not enough: a child that calls
//! `setsid()` leaves the group, and one whose parent exits is re-parented. So:
//!
//! - the daemon is a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`): orphans of
//!   its programs become its children, not init's, and it reaps them;
//! - every program is started with [`MARKER`]` = <lineage>/<n>` in its
//!   environment (the lineage is the state directory, one daemon per directory;
//!   `n` numbers the programs this daemon started), which its descendants
//!   inherit. When a program stops, every process carrying its own tag is
//!   killed (another camera's program is left alone); when the daemon starts
//!   (after a `kill -9` of an earlier daemon, whose descendants went to init),
//!   every process carrying any tag of its lineage is killed;
//! - the running programs are *owned*: their exit status belongs to their
//!   source, so the reaper of orphans never takes them.
//!
//! A descendant that clears its whole environment escapes the marker; under
//! systemd, `KillMode=control-group` (the default, kept by the shipped unit)
//! still ends it with the service: see docs/deployment.md.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable that marks a source's processes.
pub const MARKER: &str = "EDGEHEAD_SOURCE_LINEAGE";

/// Largest environment read from `/proc/<pid>/environ`.
const MAX_ENVIRON: u64 = 1 << 20;

static LINEAGE: OnceLock<String> = OnceLock::new();

/// Sequence of the programs started by this process (one tag each).
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// Children this process started and waits for itself (the running programs):
/// never reaped here, whose exit status their owner reads.
static OWNED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// This daemon's lineage: set once at start ([`adopt`]); without it (a
/// benchmark, a test) the process id.
pub fn lineage() -> String {
    LINEAGE
        .get()
        .cloned()
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// One started program's marker value, `<lineage>/<n>`: its descendants, and
/// only theirs, are stopped with it, so two command sources (two cameras) never
/// stop each other's programs.
#[derive(Debug)]
pub struct Tag(String);

impl Tag {
    /// A fresh tag for a program about to start.
    pub fn new() -> Self {
        Self(format!(
            "{}/{}",
            lineage(),
            NEXT_TAG.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// The value to set [`MARKER`] to.
    pub fn value(&self) -> &str {
        &self.0
    }
}

impl Default for Tag {
    fn default() -> Self {
        Self::new()
    }
}

/// Start `cmd` as a child its owner waits for: [`reap_zombies`] leaves it
/// alone until [`disown`]. Started under the lock the reaper holds, so a
/// program that exits at once is never reaped before it is owned.
pub fn spawn_owned(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    owned.push(child.id());
    Ok(child)
}

/// The owner of `pid` has reaped it (or is about to).
pub fn disown(pid: u32) {
    OWNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

fn owned() -> Vec<u32> {
    OWNED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Start of a daemon: become a subreaper, take `lineage` as this daemon's, and
/// kill what an earlier daemon of the same lineage left behind (every tag of
/// it). Returns how many processes were killed.
pub fn adopt(lineage: &str) -> usize {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper: descendants of a command source may outlive it");
    }
    let _ = LINEAGE.set(lineage.to_string());
    let prefix = format!("{MARKER}={lineage}/").into_bytes();
    let killed = kill_matching(|entry| entry.starts_with(&prefix));
    if killed > 0 {
        tracing::warn!(
            killed,
            "stopped processes an earlier edgehead's command source left running"
        );
    }
    killed
}

/// Kill every process carrying `tag` (but this one), reap those that are its
/// children, and reap its other exited children that nobody owns (orphans
/// re-parented to it). Returns how many were killed.
pub fn kill_tagged(tag: &Tag) -> usize {
    let needle = format!("{MARKER}={}\0", tag.value()).into_bytes();
    kill_matching(|entry| entry == needle.as_slice())
}

/// Kill every process (but this one and the owned ones) with an environment
/// entry (`NAME=value\0`) that `hit` accepts.
fn kill_matching(hit: impl Fn(&[u8]) -> bool) -> usize {
    let me = std::process::id();
    let owned = owned();
    let mut killed = Vec::new();
    // A few passes: a process may fork while the others are being killed.
    for _ in 0..5 {
        let found: Vec<u32> = pids()
            .filter(|&p| p != me && !owned.contains(&p) && !killed.contains(&p))
            .filter(|&p| environ_any(p, &hit))
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
    reap_orphans(me, &killed);
    killed.len()
}

/// Reap the children of this process that already exited and that nobody
/// owns (orphans of a program, re-parented here). A running program that
/// leaves orphans behind would otherwise fill the process table with zombies.
pub fn reap_zombies() {
    reap_orphans(std::process::id(), &[]);
}

/// Reap the children of `me` that are zombies, and wait briefly for the
/// `killed` ones that are its children; never an owned one.
fn reap_orphans(me: u32, killed: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        // Held while reaping: nothing is started (and owned) meanwhile.
        let owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
        let waiting: Vec<u32> = pids()
            .filter(|p| !owned.contains(p))
            .filter_map(|p| stat(p).map(|s| (p, s)))
            .filter(|(_, (ppid, _))| *ppid == me)
            .filter_map(|(p, (_, state))| {
                if state == 'Z' {
                    // SAFETY: a zombie child of ours that no `Child` owns.
                    unsafe { libc::waitpid(p as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
                    None
                } else {
                    killed.contains(&p).then_some(p)
                }
            })
            .collect();
        drop(owned);
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

/// Whether process `pid`'s environment has an entry (`NAME=value\0`) that
/// `hit` accepts.
fn environ_any(pid: u32, hit: impl Fn(&[u8]) -> bool) -> bool {
    let mut env = Vec::new();
    let read = std::fs::File::open(format!("/proc/{pid}/environ"))
        .and_then(|f| f.take(MAX_ENVIRON).read_to_end(&mut env));
    if read.is_err() {
        return false;
    }
    // Entries are NUL-separated; match whole entries only.
    env.split_inclusive(|&b| b == 0).any(hit)
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

    /// A `sleep 30` carrying `tag`, owned (so no reaper takes it), once its
    /// environment shows the marker.
    fn tagged_sleep(tag: &Tag) -> std::process::Child {
        let child = spawn_owned(
            std::process::Command::new("sleep")
                .arg("30")
                .env(MARKER, tag.value()),
        )
        .expect("sleep");
        let needle = format!("{MARKER}={}\0", tag.value()).into_bytes();
        // Until exec, the child's environment is still a copy of ours.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !environ_any(child.id(), |e| e == needle.as_slice()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    fn running(pid: u32) -> bool {
        stat(pid).is_some_and(|(_, state)| state != 'Z')
    }

    #[test]
    fn stopping_one_program_leaves_another_programs_processes_alone() {
        let (a, b) = (Tag::new(), Tag::new());
        assert_ne!(a.value(), b.value());
        let mut first = tagged_sleep(&a);
        let mut second = tagged_sleep(&b);
        // The first is not owned any more (like a descendant that left the
        // program's group): its tag's processes go, the second's stay.
        disown(first.id());
        assert_eq!(kill_tagged(&a), 1);
        assert!(running(second.id()), "the other program was killed too");
        // Killed, and reaped by kill_tagged or here.
        let _ = first.wait();
        assert!(!running(first.id()));
        // SAFETY: our own child.
        unsafe { libc::kill(second.id() as libc::pid_t, libc::SIGKILL) };
        let status = second
            .wait()
            .expect("an owned child is never reaped by another");
        assert!(!status.success());
        disown(second.id());
    }

    #[test]
    fn an_owned_exited_child_is_left_for_its_owner_to_reap() {
        let tag = Tag::new();
        let mut child = tagged_sleep(&tag);
        // SAFETY: our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        while running(child.id()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        reap_zombies();
        // Still a zombie of ours: its owner gets the status.
        let status = child.wait().expect("not reaped by reap_zombies");
        assert!(!status.success());
        disown(child.id());
    }
}
