//! Who may use the console: a password (Argon2id, RFC 9106, through the
//! `argon2` crate; the PHC string in `<state_dir>/console.password`, mode
//! 0600), sessions in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under
//! TLS), a CSRF token per session required on every request that changes state,
//! and failed logins rate-limited per client address and in all.
//!
//! At the first start without a password file a strong password is generated,
//! stored hashed and printed once in the log (Frigate does the same for its
//! authenticated port); `edgehead set-password` changes it, and sessions made
//! with the old one end. With `web.auth = "none"` (allowed on loopback only)
//! there is one session that is always open.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::store::fsio::write_atomic_private;

/// The password file, in the state directory.
pub const PASSWORD_FILE: &str = "console.password";
/// The session cookie's name.
pub const COOKIE: &str = "edgehead_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Shortest password `set-password` takes.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (Argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Most sessions kept; the least recently used goes first.
const MAX_SESSIONS: usize = 64;
/// A session ends after this long, used or not.
const MAX_SESSION_AGE: Duration = Duration::from_secs(30 * 86_400);
/// Failed logins allowed per client address per window, and in all.
const FAILURES_PER_ADDRESS: usize = 5;
const FAILURES_IN_ALL: usize = 30;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Why the password could not be read, set or checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an Argon2 password hash: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("cannot save the password: {0}")]
    Save(String),
    #[error("{0}")]
    Weak(String),
}

/// A fresh random token: 32 bytes from the operating system, hex.
pub fn token() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A generated password: 20 characters of a 31-letter alphabet without look-alikes
/// (about 99 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz2345679";
    let mut b = [0u8; 20];
    OsRng.fill_bytes(&mut b);
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

/// The Argon2id hash (PHC string) of `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Save(e.to_string()))
}

/// Check a new password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes.
pub fn check_new_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::Weak(format!(
            "the password needs at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::Weak(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Store `password`'s hash in `state_dir` (atomically, readable by the owner only).
pub fn set_password(state_dir: &Path, password: &str) -> Result<(), AuthError> {
    check_new_password(password)?;
    let hash = hash_password(password)?;
    write_atomic_private(&state_dir.join(PASSWORD_FILE), hash.as_bytes())
        .map_err(|e| AuthError::Save(e.to_string()))
}

/// The stored hash and when it was written (a new one ends the old sessions).
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    hash: String,
    modified: Option<SystemTime>,
}

/// One login.
#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    created: Instant,
    last_seen: Instant,
    /// The password's file time when the session was made.
    password: Option<SystemTime>,
}

/// Failed logins in the current window.
#[derive(Debug, Default)]
struct Failures {
    all: VecDeque<Instant>,
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
}

/// What a login attempt gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The session token (for the cookie) and its CSRF token.
    Ok {
        token: String,
        csrf: String,
    },
    Wrong,
    /// Too many failures: try again after this long.
    Limited(Duration),
}

/// The console's authentication state.
pub struct Auth {
    /// `None`: `web.auth = "none"`.
    password_file: Option<PathBuf>,
    idle: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<Failures>,
    /// The CSRF token of `web.auth = "none"`.
    open_csrf: String,
    /// Held while a password is checked: one at a time.
    checking: Mutex<()>,
}

impl Auth {
    /// Password authentication with the hash in `state_dir`: generated (and
    /// returned, to be shown once) when there is none yet.
    pub fn with_password(
        state_dir: &Path,
        idle: Duration,
    ) -> Result<(Self, Option<String>), AuthError> {
        let file = state_dir.join(PASSWORD_FILE);
        let generated = match std::fs::metadata(&file) {
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let p = generate_password();
                set_password(state_dir, &p)?;
                Some(p)
            }
            Err(source) => return Err(AuthError::Read { path: file, source }),
        };
        let auth = Self {
            password_file: Some(file),
            idle,
            sessions: Mutex::default(),
            failures: Mutex::default(),
            open_csrf: String::new(),
            checking: Mutex::new(()),
        };
        // A damaged file is a start-up error, not a console nobody can log into.
        auth.stored()?;
        Ok((auth, generated))
    }

    /// No login (`web.auth = "none"`, loopback only).
    pub fn open() -> Self {
        Self {
            password_file: None,
            idle: Duration::MAX,
            sessions: Mutex::default(),
            failures: Mutex::default(),
            open_csrf: token(),
            checking: Mutex::new(()),
        }
    }

    /// Whether a login is needed.
    pub fn required(&self) -> bool {
        self.password_file.is_some()
    }

    fn stored(&self) -> Result<Option<Stored>, AuthError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let read = |source| AuthError::Read {
            path: path.clone(),
            source,
        };
        let hash = std::fs::read_to_string(path).map_err(read)?;
        let modified = std::fs::metadata(path).map_err(read)?.modified().ok();
        let hash = hash.trim().to_string();
        PasswordHash::new(&hash).map_err(|e| AuthError::Damaged {
            path: path.clone(),
            why: e.to_string(),
        })?;
        Ok(Some(Stored { hash, modified }))
    }

    /// The CSRF token of the session `token`, when it is valid now (and touch it).
    pub fn session(&self, token: Option<&str>) -> Option<String> {
        let Some(path) = &self.password_file else {
            return Some(self.open_csrf.clone());
        };
        let token = token?;
        let password = std::fs::metadata(path).ok().and_then(|m| m.modified().ok());
        let now = Instant::now();
        let mut sessions = self.sessions.lock().ok()?;
        let valid = sessions.get(token).is_some_and(|s| {
            s.password == password
                && now.duration_since(s.last_seen) < self.idle
                && now.duration_since(s.created) < MAX_SESSION_AGE
        });
        if !valid {
            sessions.remove(token);
            return None;
        }
        let s = sessions.get_mut(token)?;
        s.last_seen = now;
        Some(s.csrf.clone())
    }

    /// End the session `token`.
    pub fn logout(&self, token: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(token);
        }
    }

    /// Whether `from` may try a password now; `Err(wait)` when it must wait.
    fn admit(&self, from: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(mut f) = self.failures.lock() else {
            return Err(FAILURE_WINDOW);
        };
        let expired = |q: &mut VecDeque<Instant>| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
            {
                q.pop_front();
            }
        };
        expired(&mut f.all);
        f.by_address.retain(|_, q| {
            expired(q);
            !q.is_empty()
        });
        let wait = |q: &VecDeque<Instant>| {
            q.front()
                .map(|t| FAILURE_WINDOW.saturating_sub(now.duration_since(*t)))
                .unwrap_or(FAILURE_WINDOW)
        };
        if let Some(q) = f.by_address.get(&from) {
            if q.len() >= FAILURES_PER_ADDRESS {
                return Err(wait(q));
            }
        }
        if f.all.len() >= FAILURES_IN_ALL {
            return Err(wait(&f.all));
        }
        Ok(())
    }

    fn failed(&self, from: IpAddr, now: Instant) {
        if let Ok(mut f) = self.failures.lock() {
            f.all.push_back(now);
            // Bounded: addresses beyond a thousand share the global limit only.
            if f.by_address.len() < 1000 || f.by_address.contains_key(&from) {
                f.by_address.entry(from).or_default().push_back(now);
            }
        }
    }

    /// Try `password` from `from`. Blocking (Argon2 takes a noticeable moment and
    /// 19 MiB on purpose): call it off the async threads. One password is checked
    /// at a time, so a burst of logins costs one Argon2's memory, not one each;
    /// the rate limit is checked again once it is this attempt's turn, so a burst
    /// of wrong guesses is cut off after the first few.
    pub fn login(&self, from: IpAddr, password: &str) -> Result<Login, AuthError> {
        if let Err(wait) = self.admit(from, Instant::now()) {
            return Ok(Login::Limited(wait));
        }
        let _turn = self.checking.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Err(wait) = self.admit(from, now) {
            return Ok(Login::Limited(wait));
        }
        let Some(stored) = self.stored()? else {
            return Ok(Login::Ok {
                token: String::new(),
                csrf: self.open_csrf.clone(),
            });
        };
        let ok = password.len() <= MAX_PASSWORD_BYTES
            && PasswordHash::new(&stored.hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            });
        if !ok {
            self.failed(from, now);
            return Ok(Login::Wrong);
        }
        let (token, csrf) = (token(), token());
        if let Ok(mut s) = self.sessions.lock() {
            if s.len() >= MAX_SESSIONS {
                if let Some(oldest) = s
                    .iter()
                    .min_by_key(|(_, v)| v.last_seen)
                    .map(|(k, _)| k.clone())
                {
                    s.remove(&oldest);
                }
            }
            s.insert(
                token.clone(),
                Session {
                    csrf: csrf.clone(),
                    created: now,
                    last_seen: now,
                    password: stored.modified,
                },
            );
        }
        Ok(Login::Ok { token, csrf })
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, last])
    }

    #[test]
    fn a_generated_password_logs_in_and_a_wrong_one_is_limited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (auth, generated) =
            Auth::with_password(dir.path(), Duration::from_secs(60)).expect("auth");
        let password = generated.expect("generated at the first start");
        assert_eq!(password.len(), 20);
        let stored = std::fs::read_to_string(dir.path().join(PASSWORD_FILE)).expect("file");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains(&password));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(PASSWORD_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the hash is readable by others: {mode:o}");
        }
        let Login::Ok { token, csrf } = auth.login(ip(1), &password).expect("login") else {
            panic!("the generated password was refused");
        };
        assert_eq!(auth.session(Some(&token)), Some(csrf));
        assert_eq!(auth.session(Some("forged")), None);
        for _ in 0..FAILURES_PER_ADDRESS {
            assert_eq!(auth.login(ip(2), "guess").expect("try"), Login::Wrong);
        }
        assert!(matches!(
            auth.login(ip(2), &password).expect("try"),
            Login::Limited(_)
        ));
        // Another address is not held up by the first one's failures.
        assert!(matches!(
            auth.login(ip(3), &password).expect("try"),
            Login::Ok { .. }
        ));
        // A new password ends the sessions made with the old one.
        std::thread::sleep(Duration::from_millis(20));
        set_password(dir.path(), "a new password").expect("set");
        assert_eq!(auth.session(Some(&token)), None);
        auth.logout(&token);
        let (_, again) = Auth::with_password(dir.path(), Duration::from_secs(60)).expect("auth");
        assert_eq!(again, None, "generated only once");
    }

    #[test]
    fn a_burst_of_guesses_is_checked_one_at_a_time_and_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        set_password(dir.path(), "the right password").expect("set");
        let (auth, _) = Auth::with_password(dir.path(), Duration::from_secs(60)).expect("auth");
        let auth = std::sync::Arc::new(auth);
        // Twenty guesses at once from one address: five are checked, the others
        // are refused once their turn comes, without running Argon2.
        let outcomes: Vec<Login> = (0..20)
            .map(|_| {
                let a = auth.clone();
                std::thread::spawn(move || a.login(ip(9), "guess").expect("try"))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        let wrong = outcomes.iter().filter(|o| **o == Login::Wrong).count();
        let limited = outcomes
            .iter()
            .filter(|o| matches!(o, Login::Limited(_)))
            .count();
        assert_eq!(
            (wrong, limited),
            (FAILURES_PER_ADDRESS, 20 - FAILURES_PER_ADDRESS)
        );
    }

    #[test]
    fn short_passwords_and_damaged_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(set_password(dir.path(), "short").is_err());
        std::fs::write(dir.path().join(PASSWORD_FILE), "not a hash").expect("write");
        assert!(matches!(
            Auth::with_password(dir.path(), Duration::from_secs(60)),
            Err(AuthError::Damaged { .. })
        ));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; edgehead_session=abc; b=2";
        assert_eq!(cookie(h, COOKIE), Some("abc"));
        assert_eq!(cookie(h, "c"), None);
    }
}
