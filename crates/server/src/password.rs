//! Password hashing: Argon2id with OWASP's parameters, off the async
//! runtime on threads of its own at a lower priority, a bounded number at
//! a time.
//!
//! Bounding the hashes in flight keeps a flood of logins from allocating
//! 19 MiB per request without limit. Bounding the hashes that may *wait*
//! keeps a flood from queueing without end: past the bound a login is
//! answered `503` with `Retry-After` at once ([`Error::Overloaded`]), so a
//! login that is admitted waits a few seconds at most and memory stays
//! flat. A login for an unknown user verifies against a dummy hash, so it
//! costs the same time as a wrong password.
//!
//! Each hashing thread keeps its 19 MiB of Argon2 memory from one
//! verification to the next while logins keep coming, and wipes and
//! frees it once its queue has been idle for [`KEEP_MEMORY`]: allocating
//! and zeroing it per login cost about a tenth of every hash.
//!
//! A password is hashed in Unicode normal form NFKC (NIST SP 800-63B
//! §5.1.1.2, `normalized`): the same characters typed on another
//! system (an "é" composed by one keyboard and decomposed by another, a
//! full-width digit from an East Asian input method) are the same
//! password.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// OWASP Password Storage Cheat Sheet: Argon2id, m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

/// Passwords shorter than this are refused when set: so many characters
/// (Unicode code points) as typed, and as many in the normal form that is
/// hashed (NFKC, which can make one character of several, `ﬃ` into
/// `ffi`, or several of one, `e` and a combining accent into `é`).
pub const MIN_LENGTH: usize = 8;

/// What an unknown user's login is verified against: a hash, under the
/// parameters above, of a random password nobody kept. A constant, so the
/// server does not spend 19 MiB and a hash's time at every start.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZZBq/L/H9Vfhb+pTCAnhfg$X0RMprzAQ2p48uLHtLHL1EbaZSqrxH1g4L41c2DiR2I";

/// Hashes and verifies passwords.
#[derive(Clone, Debug)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// The hashing threads' queue (`None` if they could not be started:
    /// tokio's blocking pool does the work instead).
    hashers: Option<mpsc::Sender<Job>>,
    /// Hashes running or waiting.
    admitted: Arc<AtomicUsize>,
    /// The most that may run or wait at once.
    max_admitted: usize,
}

/// Hashes that may wait for a hasher, per hasher, by default: about two
/// seconds of work at ~50 ms an Argon2id hash (OWASP parameters on one core
/// of a current server).
pub const QUEUE_PER_CORE: usize = 40;

/// Work for a hashing thread, given the thread's Argon2 memory.
type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// How long a hashing thread keeps its Argon2 memory with no work.
pub const KEEP_MEMORY: Duration = Duration::from_secs(2);

/// Argon2's working memory, kept by a hashing thread between hashes.
/// Argon2 writes every block before it reads it, so what a previous hash
/// left there never reaches the next one; it is wiped when given back.
#[derive(Default)]
pub struct Memory(Vec<Block>);

impl Memory {
    /// `count` blocks (reallocated, the old ones wiped, when more are
    /// needed than are kept).
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.release();
            self.0 = vec![Block::default(); count];
        }
        &mut self.0[..count]
    }

    /// Wipe and free the blocks.
    fn release(&mut self) {
        self.0.iter_mut().for_each(Zeroize::zeroize);
        self.0 = Vec::new();
    }

    /// How many blocks are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memory({} blocks)", self.0.len())
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        self.release();
    }
}

/// How much less the hashing threads weigh with the scheduler than the
/// rest of the server (a nice value: at 10 a thread gets about a tenth of
/// the CPU time of one at 0 when both want it). Hashes use every idle
/// cycle, but requests that need no hash (`/healthz`, refreshes, JWKS) are
/// served first when a login flood takes every core.
const HASHER_NICENESS: i32 = 10;

/// Start `count` hashing threads at a lower priority; their queue.
fn start_hashers(count: usize) -> Option<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(std::sync::Mutex::new(queue));
    for i in 0..count {
        let queue = Arc::clone(&queue);
        let started = std::thread::Builder::new()
            .name(format!("tessera-hasher-{i}"))
            .spawn(move || {
                lower_priority();
                let mut memory = Memory::default();
                loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv_timeout(KEEP_MEMORY),
                        Err(poisoned) => poisoned.into_inner().recv_timeout(KEEP_MEMORY),
                    };
                    match job {
                        Ok(job) => job(&mut memory),
                        Err(mpsc::RecvTimeoutError::Timeout) => memory.release(),
                        // Every `Passwords` clone is gone.
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start a hashing thread; using the blocking pool");
            return None;
        }
    }
    Some(jobs)
}

/// Lower this thread's scheduling priority (Linux: `setpriority` with a
/// thread id applies to that thread alone).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHER_NICENESS)
    {
        tracing::debug!(error = %e, "hashing thread keeps its priority");
    }
}

/// One admitted hash: counted from admission until it is done or dropped.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn hasher() -> Result<Argon2<'static>, Error> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| Error::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// `password` as it is hashed: NFKC. Made in room reserved beforehand,
/// so that growing it leaves no copy of the password behind in freed
/// memory (as a rule: a rare character expands further).
fn normalized(password: &str) -> Zeroizing<String> {
    let mut normal = Zeroizing::new(String::with_capacity(password.len().saturating_mul(3)));
    normal.extend(password.nfkc());
    normal
}

/// Whether `password`, as typed, matches `stored`: its normal form first,
/// then (for a password that differs from its normal form, and only when
/// that failed) as typed, for a hash made before passwords were
/// normalized. An unknown user's dummy goes the same way, so the time
/// still says nothing of whether the user exists.
fn verify_typed(password: &str, stored: &str, memory: &mut Memory) -> Result<bool, Error> {
    let normal = normalized(password);
    if verify_now(normal.as_bytes(), stored, memory)? {
        return Ok(true);
    }
    if normal.as_str() == password {
        return Ok(false);
    }
    verify_now(password.as_bytes(), stored, memory)
}

fn hash_now(password: &[u8]) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Error::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Hash(e.to_string()))?;
    Ok(hasher()?
        .hash_password(password, &salt)
        .map_err(|e| Error::Hash(e.to_string()))?
        .to_string())
}

/// Whether `password` matches the PHC string `stored`, under the
/// algorithm, version and parameters recorded in it (so hashes made under
/// older parameters keep working): what argon2's `verify_password` does,
/// in `memory` instead of a fresh allocation. A stored hash that cannot
/// be read (another scheme: users imported with bcrypt hashes, say; a
/// damaged row) is this server's failure, not a wrong password: said
/// as [`Error::Hash`], where a `false` told the person their password was
/// wrong and counted it against the account's login limits.
fn verify_now(password: &[u8], stored: &str, memory: &mut Memory) -> Result<bool, Error> {
    let unreadable =
        || Error::Hash("a stored password hash is not a readable Argon2 PHC string".into());
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Err(unreadable());
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(unreadable());
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&parsed),
    ) else {
        return Err(unreadable());
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return Err(unreadable());
    };
    let blocks = memory.blocks(params.block_count());
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, blocks)
        .map_err(|e| Error::Hash(e.to_string()))?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(&out).is_ok_and(|computed| computed == expected))
}

impl Passwords {
    /// A hasher running at most `concurrency` hashes at once, with
    /// [`QUEUE_PER_CORE`] per hasher waiting.
    pub fn new(concurrency: usize) -> Passwords {
        let concurrency = concurrency.max(1);
        Passwords::with_queue(concurrency, concurrency.saturating_mul(QUEUE_PER_CORE))
    }

    /// A hasher running at most `concurrency` hashes at once, with at most
    /// `queue` more waiting; beyond that, [`Error::Overloaded`].
    pub fn with_queue(concurrency: usize, queue: usize) -> Passwords {
        let concurrency = concurrency.max(1);
        Passwords {
            permits: Arc::new(Semaphore::new(concurrency)),
            hashers: start_hashers(concurrency),
            admitted: Arc::new(AtomicUsize::new(0)),
            max_admitted: concurrency.saturating_add(queue),
        }
    }

    /// Admit one more hash, or refuse it when the queue is full.
    fn admit(&self) -> Result<Admitted, Error> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(Arc::clone(&self.admitted));
        if before >= self.max_admitted {
            metrics::counter!("tessera_password_hashes_refused_total").increment(1);
            return Err(Error::Overloaded("too many password checks waiting"));
        }
        Ok(admitted)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let admitted = self.admit()?;
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| Error::Hash(e.to_string()))?;
        // Once handed to a hasher, the job holds its admission and its
        // permit until it is done: a request dropped meanwhile (a timeout,
        // a client gone) frees neither early, so the queue's bound holds
        // however many give up.
        let Some(hashers) = &self.hashers else {
            return tokio::task::spawn_blocking(move || {
                let held = (admitted, permit);
                let out = work(&mut Memory::default());
                drop(held);
                out
            })
            .await
            .map_err(|e| Error::Hash(format!("hashing task: {e}")));
        };
        let (done, result) = tokio::sync::oneshot::channel();
        hashers
            .send(Box::new(move |memory: &mut Memory| {
                let held = (admitted, permit);
                // Nobody waits for it any more: no hash.
                if done.is_closed() {
                    return;
                }
                let out = work(memory);
                // Its place is free by the time the answer arrives.
                drop(held);
                let _ = done.send(out);
            }))
            .map_err(|_| Error::Hash("the hashing threads are gone".into()))?;
        result
            .await
            .map_err(|_| Error::Hash("a hashing thread failed".into()))
    }

    /// Hash a new password (refusing one shorter than [`MIN_LENGTH`]).
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, Error> {
        let typed = password.chars().count();
        let password = normalized(&password);
        // Counted both ways: NFKC spreads some single characters over
        // many (U+FDFA is eighteen), which alone would let a password of
        // one character through.
        if typed.min(password.chars().count()) < MIN_LENGTH {
            return Err(Error::Invalid(format!(
                "password too short: at least {MIN_LENGTH} characters"
            )));
        }
        self.run(move |_| hash_now(password.as_bytes())).await?
    }

    /// Whether `password` matches `stored`; with no stored hash (an
    /// unknown user) the same work is done against a dummy and `false`
    /// returned.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let matched = self
            .run(move |memory| verify_typed(&password, &stored, memory))
            .await??;
        Ok(known && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password set in one Unicode form is the same password typed in
    /// another: "é" composed (U+00E9) or decomposed (e, U+0301), a
    /// full-width digit or an ASCII one. A hash made before passwords
    /// were normalized still verifies the password as it was typed then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_password_is_the_same_whatever_its_unicode_form() {
        let p = Passwords::new(1);
        let composed = "caf\u{e9} au lait \u{ff11}";
        let decomposed = "cafe\u{301} au lait 1";
        let stored = p.hash(Zeroizing::new(composed.into())).await.unwrap();
        for typed in [composed, decomposed] {
            assert!(
                p.verify(Zeroizing::new(typed.into()), Some(stored.clone()))
                    .await
                    .unwrap(),
                "{typed:?}"
            );
        }
        assert!(!p
            .verify(Zeroizing::new("cafe au lait 1".into()), Some(stored))
            .await
            .unwrap());
        // Hashed as typed, before: still good as typed.
        let legacy = hash_now(decomposed.as_bytes()).unwrap();
        assert!(p
            .verify(Zeroizing::new(decomposed.into()), Some(legacy))
            .await
            .unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_given_up_keeps_its_place_until_its_hash_is_done() {
        let p = Passwords::with_queue(1, 0);
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        // A check whose hash is running when its request goes away.
        let gone = {
            let p = p.clone();
            tokio::spawn(async move {
                p.run(move |_| {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv();
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        // Its hash still runs: the next check is refused at once, not
        // queued behind it (before, the dropped request freed its place).
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            p.verify(Zeroizing::new("correct horse".into()), None),
        )
        .await
        .expect("answered at once");
        assert!(matches!(next, Err(Error::Overloaded(_))), "{next:?}");
        release.send(()).unwrap();
        let mut after = p.verify(Zeroizing::new("correct horse".into()), None).await;
        while matches!(after, Err(Error::Overloaded(_))) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            after = p.verify(Zeroizing::new("correct horse".into()), None).await;
        }
        assert!(!after.unwrap(), "an unknown user never matches");
        assert_eq!(p.admitted.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once() {
        let p = Passwords::with_queue(1, 2);
        let hash = p
            .hash(Zeroizing::new("correct horse".into()))
            .await
            .unwrap();
        // Hold the only hasher, so every admitted check waits.
        let hold = Arc::clone(&p.permits).acquire_owned().await.unwrap();
        let mut tasks: Vec<_> = (0..8)
            .map(|_| {
                let (p, hash) = (p.clone(), hash.clone());
                tokio::spawn(async move {
                    p.verify(Zeroizing::new("wrong horse".into()), Some(hash))
                        .await
                })
            })
            .collect();
        // One running and two waiting are admitted; the other five are
        // refused while the hasher is still taken.
        let mut refused = 0;
        while refused < 5 {
            let mut waiting = Vec::new();
            for task in tasks {
                if task.is_finished() {
                    assert!(matches!(task.await.unwrap(), Err(Error::Overloaded(_))));
                    refused += 1;
                } else {
                    waiting.push(task);
                }
            }
            tasks = waiting;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(tasks.len(), 3);
        assert_eq!(p.admitted.load(Ordering::Acquire), 3);
        drop(hold);
        for task in tasks {
            assert!(!task.await.unwrap().unwrap());
        }
        // Everything admitted has left: the queue takes work again.
        assert_eq!(p.admitted.load(Ordering::Acquire), 0);
        assert!(p
            .verify(Zeroizing::new("correct horse".into()), Some(hash))
            .await
            .unwrap());
    }

    /// The verification that reuses memory says what argon2's own
    /// `verify_password` says, for every algorithm, version and size of
    /// parameters, in one memory reused across sizes.
    #[test]
    fn verification_in_kept_memory_agrees_with_argon2() {
        use argon2::password_hash::PasswordVerifier;
        let mut memory = Memory::default();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let mut stored = Vec::new();
        for (algorithm, version, m) in [
            (Algorithm::Argon2id, Version::V0x13, 256),
            (Algorithm::Argon2id, Version::V0x13, 64),
            (Algorithm::Argon2i, Version::V0x13, 128),
            (Algorithm::Argon2d, Version::V0x10, 512),
        ] {
            let params = Params::new(m, 2, 1, Some(24)).unwrap();
            let hash = Argon2::new(algorithm, version, params)
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string();
            stored.push(hash);
        }
        stored.push(DUMMY_HASH.to_owned());
        for hash in &stored {
            let parsed = PasswordHash::new(hash).unwrap();
            for password in [&b"correct horse"[..], b"correct horsf", b""] {
                let theirs = Argon2::default().verify_password(password, &parsed).is_ok();
                assert_eq!(
                    verify_now(password, hash, &mut memory).unwrap(),
                    theirs,
                    "{hash}"
                );
            }
            assert!(verify_now(b"correct horse", hash, &mut memory).unwrap() || hash == DUMMY_HASH);
        }
        // The largest parameters seen are kept: 19 MiB of 1 KiB blocks.
        assert_eq!(memory.kept(), 19456);
        // What cannot be a hash never matches: it is an error, not a
        // wrong password.
        let good = &stored[0];
        let no_output = &good[..good.rfind('$').unwrap()];
        let other_scheme = good.replace("$argon2id$", "$scrypt$");
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        for bad in [
            "",
            "$argon2id$",
            no_output,
            &other_scheme,
            "plain text",
            bcrypt,
        ] {
            assert!(
                matches!(
                    verify_now(b"correct horse", bad, &mut memory),
                    Err(Error::Hash(_))
                ),
                "{bad:?}"
            );
        }
        memory.release();
        assert_eq!(memory.kept(), 0);
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let p = Passwords::new(2);
        let hash = p
            .hash(Zeroizing::new("correct horse".into()))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(p
            .verify(Zeroizing::new("correct horse".into()), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!p
            .verify(Zeroizing::new("wrong horse".into()), Some(hash.clone()))
            .await
            .unwrap());
        // An unknown user never logs in, whatever the password.
        assert!(!p
            .verify(Zeroizing::new("correct horse".into()), None)
            .await
            .unwrap());
        // The dummy costs what a real hash costs: the same parameters.
        let real = PasswordHash::new(&hash).unwrap();
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(real.algorithm, dummy.algorithm);
        assert_eq!(real.params, dummy.params);
        assert_eq!(real.version, dummy.version);
        assert!(matches!(
            p.hash(Zeroizing::new("short".into())).await,
            Err(Error::Invalid(_))
        ));
    }

    /// Eight characters as typed and as hashed: a character NFKC spreads
    /// over many, or characters it joins into fewer, do not make up the
    /// length.
    #[tokio::test]
    async fn the_shortest_password_is_counted_as_typed_and_as_hashed() {
        let p = Passwords::new(1);
        for short in [
            "\u{FDFA}",                         // one character, eighteen in NFKC
            "\u{FB03}\u{FB03}\u{FB03}",         // ﬃﬃﬃ: three, nine in NFKC
            "e\u{301}e\u{301}e\u{301}e\u{301}", // eight typed, four in NFKC
            "1234567",
        ] {
            assert!(
                matches!(
                    p.hash(Zeroizing::new(short.into())).await,
                    Err(Error::Invalid(_))
                ),
                "{short:?}"
            );
        }
        for long in [
            "12345678",
            "\u{FB03}\u{FB03}\u{FB03}\u{FB03}\u{FB03}\u{FB03}\u{FB03}\u{FB03}",
        ] {
            assert!(
                p.hash(Zeroizing::new(long.into())).await.is_ok(),
                "{long:?}"
            );
        }
    }
}
