//! Random tokens, their digests, and the master key that seals signing keys
//! (and the keys derived from it for other purposes).

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::hkdf::{Prk, Salt, HKDF_SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64_simd::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::Error;

/// A fresh 256-bit random value, base64url (43 characters): refresh tokens
/// and client secrets.
pub fn random_token() -> Result<Zeroizing<String>, Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| Error::Random)?;
    Ok(Zeroizing::new(
        URL_SAFE_NO_PAD.encode_to_string(bytes.as_ref()),
    ))
}

/// A random identifier (128 bits, base64url): user and family ids.
pub fn random_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    Ok(URL_SAFE_NO_PAD.encode_to_string(bytes))
}

/// The SHA-256 digest under which a high-entropy secret is stored. Such
/// secrets need no slow hash: nobody can guess 256 random bits.
pub fn token_digest(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

/// Compare two digests in constant time.
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// The AES-256-GCM key that seals signing keys at rest.
///
/// Every instance on one database needs the same master key; a different
/// one fails to open the stored keys with [`Error::MasterKey`] rather than
/// signing with something else.
pub struct MasterKey {
    sealing: SealingKey,
    /// Derived from it: seals pending sign-ins, which browsers carry.
    pending: MessageKeys,
    /// Derived from it: seals refresh-token successors during their grace
    /// window, one per rotation.
    successors: MessageKeys,
    /// Derived from it: the authorization code of a pending sign-in.
    codes: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

/// An AES-256-GCM key that seals one kind of secret: the master key's own,
/// or one derived from it ([`MasterKey::pending`]).
pub struct SealingKey(LessSafeKey);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([REDACTED])")
    }
}

/// Where the master key comes from. `Debug` shows a file's path, never
/// a key given as a value.
#[derive(Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// Base64url of 32 bytes, from an environment variable's value.
    Value(Zeroizing<String>),
    /// A file holding the base64url text; at the default place
    /// (`DATA_DIR/master.key`) a first start creates it (mode 0600).
    File(std::path::PathBuf),
}

/// The mode of the file at `path` (links followed, as a mounted secret's
/// are) when users other than its owner may read it; `None` when only the
/// owner may, or it cannot be told. A start warns of it rather than
/// refusing, since orchestrators mount secrets 0644 by default (a
/// Kubernetes secret volume's `defaultMode`).
pub(crate) fn others_may_read(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
        (mode & 0o044 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKeySource::Value(_) => f.write_str("Value([REDACTED])"),
            MasterKeySource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl MasterKey {
    /// Load the master key; `None` when its file does not exist.
    pub fn load_existing(source: &MasterKeySource) -> Result<Option<MasterKey>, Error> {
        match source {
            MasterKeySource::Value(text) => MasterKey::from_text(text).map(Some),
            MasterKeySource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    if let Some(mode) = others_may_read(path) {
                        tracing::warn!(
                            file = %path.display(),
                            mode = format!("{mode:o}"),
                            "other users of the host may read the master key file; whoever \
                             reads it can unseal the signing keys and forge tokens \
                             (chmod 600 it, or 400)"
                        );
                    }
                    MasterKey::from_text(&Zeroizing::new(text)).map(Some)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(path, e)),
            },
        }
    }

    /// Make a new random master key and write it to `path` (mode 0600),
    /// refusing to overwrite a file that exists.
    pub fn create(path: &Path) -> Result<MasterKey, Error> {
        let text = random_token()?;
        write_private_file(path, text.as_bytes())?;
        MasterKey::from_text(&text)
    }

    /// [`MasterKey::create`], or the key another process made at `path`
    /// in the meantime: two first starts at once (a server and an admin
    /// command) both found no file; the one whose file got the name makes
    /// the key, and the other takes it, instead of failing its start.
    pub fn create_or_take(path: &Path) -> Result<MasterKey, Error> {
        match MasterKey::create(path) {
            Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::AlreadyExists => {
                MasterKey::load_existing(&MasterKeySource::File(path.to_owned()))?.ok_or_else(
                    || Error::MasterKey(format!("{} was made, then removed", path.display())),
                )
            }
            made => made,
        }
    }

    fn from_text(text: &str) -> Result<MasterKey, Error> {
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode_to_vec(text.trim())
                .map_err(|_| Error::MasterKey("not base64url (of 32 bytes)".into()))?,
        );
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| Error::MasterKey(format!("{} bytes, need 32", bytes.len())))?;
        let derivation = Salt::new(HKDF_SHA256, b"tessera master key").extract(&bytes);
        let codes = derivation
            .expand(&[b"authorization codes"], aws_lc_rs::hmac::HMAC_SHA256)
            .map_err(|_| Error::MasterKey("key derivation failed".into()))?;
        Ok(MasterKey {
            sealing: SealingKey(LessSafeKey::new(key)),
            pending: MessageKeys::derive(&derivation, "pending sign-ins")?,
            successors: MessageKeys::derive(&derivation, "refresh successors")?,
            codes: aws_lc_rs::hmac::Key::from(codes),
        })
    }

    /// The authorization code that answers the pending sign-in whose
    /// digest is `request` for user `user_id` (256 bits, base64url, as
    /// [`random_token`]): the same each time, so that a form sent twice
    /// (a double click, whose first answer the browser dropped) gets the
    /// very code the first one stored, and the sign-in goes on, where it
    /// got an error page. Only this server can make it (a key of its
    /// own, derived from the master key), and it is stored as a digest
    /// like any code. The user is part of it: a request answered for a
    /// user deleted since (and the code with them) and then answered for
    /// another never gets the code it had.
    pub fn code_for(&self, request: &[u8], user_id: &str) -> Zeroizing<String> {
        let mut context = aws_lc_rs::hmac::Context::with_key(&self.codes);
        context.update(request);
        context.update(&[0]);
        context.update(user_id.as_bytes());
        let tag = context.sign();
        Zeroizing::new(URL_SAFE_NO_PAD.encode_to_string(tag.as_ref()))
    }

    /// The key that seals pending sign-ins: what the server hands to
    /// browsers sealed, in volumes a client chooses, is never sealed under
    /// the key that seals signing keys at rest.
    pub fn pending(&self) -> &MessageKeys {
        &self.pending
    }

    /// The key that seals refresh-token successors: one seal per rotation,
    /// each with a random nonce, is a volume that must not count against
    /// the key that seals signing keys at rest, which never changes.
    pub fn successors(&self) -> &MessageKeys {
        &self.successors
    }

    /// Encrypt `plaintext`, bound to `label` (the key id), as
    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        self.sealing.seal(label, plaintext)
    }

    /// Decrypt what [`MasterKey::seal`] made with the same `label`.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.sealing.open(label, sealed)
    }
}

/// A key of its own for `purpose` (HKDF-SHA256, the purpose and `salt`
/// as info).
fn derive(derivation: &Prk, purpose: &str, salt: &[u8]) -> Result<SealingKey, Error> {
    let info = [purpose.as_bytes(), salt];
    let okm = derivation
        .expand(&info, &AES_256_GCM)
        .map_err(|_| Error::MasterKey("key derivation failed".into()))?;
    Ok(SealingKey(LessSafeKey::new(UnboundKey::from(okm))))
}

/// Bytes of the random salt a [`MessageKeys`] seal begins with.
const MESSAGE_SALT_LEN: usize = 32;

/// Seals for secrets made in volumes others choose (a pending sign-in per
/// unauthenticated authorization request, a refresh successor per
/// rotation): each message under an AES-256-GCM key of its own, derived
/// (HKDF-SHA256) from the purpose's secret and a 256-bit random salt that
/// the seal begins with, as `salt || nonce || ciphertext || tag`. One key
/// with random 96-bit nonces is good for 2^32 seals (NIST SP 800-38D
/// §8.3), which a busy server or a client asking for login pages in a loop
/// would reach in weeks, after which a repeated nonce gives away the
/// authentication key and lets sealed fields be changed.
///
/// Seals made under the purpose's single key by earlier versions (`nonce
/// || ciphertext || tag`) still open, so that an upgrade strands no
/// sign-in under way and no refresh successor.
pub struct MessageKeys {
    derivation: Prk,
    purpose: &'static str,
    /// The purpose's single key of earlier versions, to open their seals.
    earlier: SealingKey,
}

impl std::fmt::Debug for MessageKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKeys([REDACTED])")
    }
}

impl MessageKeys {
    fn derive(derivation: &Prk, purpose: &'static str) -> Result<MessageKeys, Error> {
        Ok(MessageKeys {
            derivation: derivation.clone(),
            purpose,
            earlier: derive(derivation, purpose, &[])?,
        })
    }

    /// Encrypt `plaintext`, bound to `label`, under a key of its own.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut salt = [0u8; MESSAGE_SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| Error::Random)?;
        let key = derive(&self.derivation, self.purpose, &salt)?;
        let mut out = salt.to_vec();
        out.extend_from_slice(&key.seal(label, plaintext)?);
        Ok(out)
    }

    /// Decrypt what [`MessageKeys::seal`] made with the same `label`, or
    /// what an earlier version sealed under the purpose's single key.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if let Some((salt, rest)) = sealed.split_at_checked(MESSAGE_SALT_LEN) {
            let key = derive(&self.derivation, self.purpose, salt)?;
            if let Ok(plain) = key.open(label, rest) {
                return Ok(plain);
            }
        }
        self.earlier.open(label, sealed)
    }
}

impl SealingKey {
    /// Encrypt `plaintext`, bound to `label`, as `nonce || ciphertext ||
    /// tag`.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Random)?;
        let mut out = nonce.to_vec();
        let mut body = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(label.as_bytes()),
                &mut body,
            )
            .map_err(|_| Error::MasterKey("encryption failed".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypt what [`SealingKey::seal`] made with the same `label`.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let wrong = || {
            Error::MasterKey(format!(
                "cannot open {label:?}: a different master key sealed it, or the stored value \
                 is damaged"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut body = Zeroizing::new(body.to_vec());
        let plain_len = self
            .0
            .open_in_place(nonce, Aad::from(label.as_bytes()), &mut body)
            .map_err(|_| wrong())?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

/// Create `path` with `contents`, readable only by its owner, refusing to
/// overwrite; the file appears whole or not at all ([`PrivateFile`]).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut file = PrivateFile::create(path)?;
    file.file
        .write_all(contents)
        .map_err(|e| Error::io(path, e))?;
    file.publish()
}

/// A new file readable only by its owner, written under a temporary name
/// beside its own and given that name only once complete and on disk: a
/// crash, a full disk or an error while it is written leaves nothing
/// under the name (where an empty master key would stop every start, and
/// a half backup would pass for one). Dropped unpublished, the temporary
/// file is removed.
#[derive(Debug)]
pub struct PrivateFile {
    path: std::path::PathBuf,
    temporary: std::path::PathBuf,
    /// The temporary file as created: written through, synced, and
    /// compared with what the temporary name holds before it is named.
    file: std::fs::File,
}

impl PrivateFile {
    /// Make the temporary file (empty, mode 0600) for `path`, which must
    /// not exist.
    pub fn create(path: &Path) -> Result<PrivateFile, Error> {
        if path.symlink_metadata().is_ok() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "it exists already"),
            ));
        }
        let name = path
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} names no file", path.display())))?;
        let temporary =
            path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), random_id()?));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(&temporary)
            .map_err(|e| Error::io(&temporary, e))?;
        Ok(PrivateFile {
            path: path.to_owned(),
            temporary,
            file,
        })
    }

    /// Where to write the contents.
    pub fn temporary(&self) -> &Path {
        &self.temporary
    }

    /// Sync the contents, then give them their name (never over another
    /// file, even one made meanwhile) and sync the directory.
    pub fn publish(self) -> Result<(), Error> {
        self.file
            .sync_all()
            .map_err(|e| Error::io(&self.temporary, e))?;
        // The temporary name must still hold the file created: one
        // swapped for another (a link to someone else's file) is not
        // published.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ours = self
                .file
                .metadata()
                .map_err(|e| Error::io(&self.temporary, e))?;
            let named = std::fs::symlink_metadata(&self.temporary)
                .map_err(|e| Error::io(&self.temporary, e))?;
            if (ours.dev(), ours.ino()) != (named.dev(), named.ino()) {
                return Err(Error::io(
                    &self.temporary,
                    std::io::Error::other("replaced while it was written"),
                ));
            }
        }
        give_name(&self.temporary, &self.path).map_err(|e| Error::io(&self.path, e))?;
        // The name is durable once its directory is. A directory that
        // could not be synced is reported: the file is complete, but its
        // name may not survive a power loss (a master key gone after the
        // database was tied to it).
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        directory_synced(std::fs::File::open(dir).and_then(|d| d.sync_all())).map_err(|e| {
            Error::io(
                &self.path,
                std::io::Error::new(
                    e.kind(),
                    format!("written, but its directory could not be synced ({e}): the name may not survive a power loss"),
                ),
            )
        })
    }
}

/// Whether a directory's sync went well enough: a file system that
/// cannot sync a directory at all (`EINVAL`: some network and FUSE file
/// systems) gives no more durability to wait for, and is not an error;
/// any other failure (an I/O error) is.
fn directory_synced(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::INVAL) => Ok(()),
        other => other,
    }
}

/// Name `temporary`'s file `path`, never over a file there: a rename that
/// refuses to replace (Linux's `RENAME_NOREPLACE`), or, where that
/// rename fails for any reason but a file in the way, a hard link (whose
/// source the caller removes). One or the other works on every file system a data
/// directory or a backup goes to, FAT and exFAT included (no hard links).
fn give_name(temporary: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, temporary, CWD, path, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            // Taken: the file is not replaced, the caller hears so.
            Err(e) if e == rustix::io::Errno::EXIST => return Err(e.into()),
            // Unknown here (a file system, kernel or sandbox without it):
            // the link, which never replaces either.
            Err(_) => {}
        }
    }
    std::fs::hard_link(temporary, path)
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory sync that failed is reported, unless the file system
    /// cannot sync directories at all.
    #[test]
    fn a_failed_directory_sync_is_an_error_unless_unsupported() {
        let errno = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
        assert!(directory_synced(Ok(())).is_ok());
        assert!(directory_synced(Err(errno(rustix::io::Errno::INVAL))).is_ok());
        assert!(directory_synced(Err(errno(rustix::io::Errno::IO))).is_err());
        assert!(directory_synced(Err(errno(rustix::io::Errno::NOSPC))).is_err());
    }

    #[test]
    fn a_private_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let names = || -> Vec<String> {
            std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        // Written, then dropped before it was published (a failure half
        // way): nothing under either name.
        let file = PrivateFile::create(&path).unwrap();
        std::fs::write(file.temporary(), b"half").unwrap();
        drop(file);
        assert!(names().is_empty(), "{:?}", names());
        write_private_file(&path, b"whole").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert_eq!(names(), ["master.key"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never over another file, even one made after the start.
        assert!(write_private_file(&path, b"again").is_err());
        let late = PrivateFile::create(&dir.path().join("late")).unwrap();
        std::fs::write(dir.path().join("late"), b"theirs").unwrap();
        assert!(late.publish().is_err());
        assert_eq!(std::fs::read(dir.path().join("late")).unwrap(), b"theirs");
        assert_eq!(names().len(), 2, "{:?}", names());
        // The temporary name swapped for a link to someone else's file
        // while it was written: not published.
        #[cfg(unix)]
        {
            let swapped = PrivateFile::create(&dir.path().join("swapped")).unwrap();
            std::fs::remove_file(swapped.temporary()).unwrap();
            std::os::unix::fs::symlink(dir.path().join("late"), swapped.temporary()).unwrap();
            assert!(swapped.publish().is_err());
            assert!(!dir.path().join("swapped").exists());
        }
    }

    #[test]
    fn sealed_keys_open_only_with_their_master_key_and_label() {
        let a = MasterKey::from_text(&random_token().unwrap()).unwrap();
        let b = MasterKey::from_text(&random_token().unwrap()).unwrap();
        let sealed = a.seal("kid-1", b"pkcs8 bytes").unwrap();
        assert_eq!(&a.open("kid-1", &sealed).unwrap()[..], b"pkcs8 bytes");
        assert!(matches!(b.open("kid-1", &sealed), Err(Error::MasterKey(_))));
        // Each purpose has a key of its own.
        let successor = a.successors().seal("kid-1", b"token").unwrap();
        assert!(a.open("kid-1", &successor).is_err());
        assert!(a.successors().open("kid-1", &sealed).is_err());
        assert!(a.pending().open("kid-1", &successor).is_err());
        assert_eq!(
            &a.successors().open("kid-1", &successor).unwrap()[..],
            b"token"
        );
        // Swapping the sealed blobs of two keys is detected by the label.
        assert!(a.open("kid-2", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(a.open("kid-1", &tampered).is_err());
        assert!(a.open("kid-1", &sealed[..5]).is_err());
    }

    #[test]
    fn the_pending_key_seals_apart_from_the_master_key() {
        let text = random_token().unwrap();
        let master = MasterKey::from_text(&text).unwrap();
        let pending = master.pending();
        let sealed = pending.seal("label", b"secret").unwrap();
        assert_eq!(&pending.open("label", &sealed).unwrap()[..], b"secret");
        // The same master key derives the same key (every instance, every
        // start).
        let again = MasterKey::from_text(&text).unwrap();
        assert_eq!(
            &again.pending().open("label", &sealed).unwrap()[..],
            b"secret"
        );
        // Neither the master key nor another purpose's key opens it, and
        // the derived key opens nothing the master key sealed.
        assert!(master.open("label", &sealed).is_err());
        let other = MasterKey::from_text(&random_token().unwrap()).unwrap();
        assert!(other.pending().open("label", &sealed).is_err());
        let by_master = master.seal("label", b"secret").unwrap();
        assert!(pending.open("label", &by_master).is_err());
        assert_eq!(format!("{pending:?}"), "MessageKeys([REDACTED])");
    }

    #[test]
    fn master_key_text_must_be_32_bytes_of_base64url() {
        assert!(MasterKey::from_text("short").is_err());
        assert!(MasterKey::from_text("!!!!").is_err());
        assert_eq!(
            format!(
                "{:?}",
                MasterKey::from_text(&random_token().unwrap()).unwrap()
            ),
            "MasterKey([REDACTED])"
        );
    }

    /// Pending sign-ins and refresh successors are sealed each under a key
    /// of its own (a random salt, then the seal), and what earlier versions
    /// sealed under the purpose's single key still opens.
    #[test]
    fn each_message_is_sealed_under_a_key_of_its_own() {
        let master = MasterKey::from_text(&random_token().unwrap()).unwrap();
        let keys = master.pending();
        let one = keys.seal("label", b"secret").unwrap();
        let two = keys.seal("label", b"secret").unwrap();
        assert_eq!(one.len(), MESSAGE_SALT_LEN + NONCE_LEN + 6 + 16);
        assert_ne!(one[..MESSAGE_SALT_LEN], two[..MESSAGE_SALT_LEN]);
        assert_eq!(&keys.open("label", &one).unwrap()[..], b"secret");
        assert_eq!(&keys.open("label", &two).unwrap()[..], b"secret");
        // Not under the purpose's single key, nor another purpose's.
        assert!(keys
            .earlier
            .open("label", &one[MESSAGE_SALT_LEN..])
            .is_err());
        assert!(master.successors().open("label", &one).is_err());
        // Bound to its label, its salt and every byte.
        assert!(keys.open("other", &one).is_err());
        for at in [0, MESSAGE_SALT_LEN, one.len() - 1] {
            let mut changed = one.clone();
            changed[at] ^= 1;
            assert!(keys.open("label", &changed).is_err(), "byte {at}");
        }
        // A seal of an earlier version opens.
        let earlier = keys.earlier.seal("label", b"before").unwrap();
        assert_eq!(&keys.open("label", &earlier).unwrap()[..], b"before");
        assert!(keys.open("label", &[]).is_err());
    }

    #[test]
    fn master_key_file_is_created_once_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let source = MasterKeySource::File(path.clone());
        assert!(MasterKey::load_existing(&source).unwrap().is_none());
        let first = MasterKey::create(&path).unwrap();
        let sealed = first.seal("k", b"x").unwrap();
        let again = MasterKey::load_existing(&source).unwrap().unwrap();
        // Never over a key that exists.
        assert!(MasterKey::create(&path).is_err());
        assert_eq!(&again.open("k", &sealed).unwrap()[..], b"x");
        // A start that found no file, and lost the race to make it, takes
        // the key that won.
        let taken = MasterKey::create_or_take(&path).unwrap();
        assert_eq!(&taken.open("k", &sealed).unwrap()[..], b"x");
        let elsewhere = dir.path().join("another.key");
        let made = MasterKey::create_or_take(&elsewhere).unwrap();
        assert!(made.open("k", &sealed).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(others_may_read(&path), None);
            // A key file others may read is said at a start (it still
            // loads: orchestrators mount secrets 0644 by default).
            for (mode, said) in [(0o644, Some(0o644)), (0o640, Some(0o640)), (0o400, None)] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                assert_eq!(others_may_read(&path), said, "{mode:o}");
                assert!(MasterKey::load_existing(&source).unwrap().is_some());
            }
        }
    }
}
