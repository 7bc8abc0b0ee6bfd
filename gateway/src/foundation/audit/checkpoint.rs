//! Signed checkpoints of the audit chain. The chain alone proves only that it agrees with
//! itself: whoever can write the database can edit, delete or wipe entries and recompute every
//! hash and the head. A checkpoint — the head hash, the entry count and the time, signed with an
//! Ed25519 key the database does not hold, in a directory outside it — fixes the chain up to that
//! entry: a rewrite, a truncation or a wipe of anything it covers no longer matches a signature
//! only the gateway could have made, and anyone with the public key can check that.
//!
//! Each node runs a [`Checkpointer`]: after `checkpoint_every_entries` new entries or
//! `checkpoint_every_secs` seconds with new entries, it takes the chain head's lock, reads the
//! head, checks that the entries since its last checkpoint still extend it (so it never signs a
//! rewritten chain), signs and writes the checkpoint. Nodes sharing one database should share
//! the directory too; checkpoints from any of them verify with the same public key.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::{Mutex, Notify};

use crate::foundation::config::AuditConfig;
use crate::foundation::store::Store;

/// The format named in every checkpoint and in the bytes it signs, so a signature made for
/// anything else can never pass as a checkpoint.
pub const FORMAT: &str = "weft-audit-checkpoint/1";

/// The public key, published beside the checkpoints (SubjectPublicKeyInfo PEM, which
/// `openssl pkey -pubin` reads).
pub const PUBLIC_KEY_FILE: &str = "audit-public-key.pem";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Never carries the key or any part of it.
    #[error("audit signing key: {0}")]
    Key(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: {problem}")]
    Malformed { file: String, problem: String },
    #[error("audit store: {0}")]
    Store(#[from] sqlx::Error),
    /// The chain no longer extends the last checkpoint this node signed: it was rewritten or
    /// cut, and signing its head now would bless that.
    #[error("the audit chain does not extend the last checkpoint: {0}")]
    Diverged(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The private key. Its `Debug` shows only the public key's id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().id())
    }
}

impl SigningKey {
    /// A new random key and its text form (64 hex digits), for `weft audit keygen` and the demo.
    pub fn generate() -> Result<(SigningKey, String), CheckpointError> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| CheckpointError::Key("no randomness available".into()))?;
        let text = hex::encode(seed);
        Ok((SigningKey::from_seed(&seed)?, text))
    }

    fn from_seed(seed: &[u8]) -> Result<SigningKey, CheckpointError> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(|pair| SigningKey { pair })
            .map_err(|_| CheckpointError::Key("not an Ed25519 seed".into()))
    }

    /// Parses 64 hex digits. The error says what is wrong, never what was given.
    pub fn from_hex(text: &str) -> Result<SigningKey, CheckpointError> {
        let seed = hex::decode(text.trim())
            .map_err(|_| CheckpointError::Key("must be 64 hex digits".into()))?;
        if seed.len() != 32 {
            return Err(CheckpointError::Key("must be 64 hex digits".into()));
        }
        SigningKey::from_seed(&seed)
    }

    /// The configured key: `audit.signing_key` (the environment) before `audit.signing_key_file`.
    pub fn from_config(cfg: &AuditConfig) -> Result<Option<SigningKey>, CheckpointError> {
        if let Some(k) = &cfg.signing_key {
            return SigningKey::from_hex(k.expose_secret()).map(Some);
        }
        if let Some(path) = &cfg.signing_key_file {
            let text = std::fs::read_to_string(path).map_err(io(path))?;
            return SigningKey::from_hex(&text)
                .map(Some)
                .map_err(|e| CheckpointError::Key(format!("{}: {e}", path.display())));
        }
        Ok(None)
    }

    pub fn public(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(k)
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// What a third party needs to check checkpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    /// Names the key in each checkpoint, so a checkpoint signed by another key is told apart
    /// from a forged one: the first 8 bytes of the SHA-256 of the key, in hex.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }

    /// A PEM SubjectPublicKeyInfo (as published) or 64 hex digits.
    pub fn parse(text: &str) -> Result<PublicKey, CheckpointError> {
        let bad = |why: &str| CheckpointError::Key(format!("public key: {why}"));
        let text = text.trim();
        let bytes = if text.starts_with("-----BEGIN PUBLIC KEY-----") {
            let body: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .join("");
            let der = base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .map_err(|_| bad("the PEM is not base64"))?;
            match der.strip_prefix(&SPKI_PREFIX[..]) {
                Some(k) => k.to_vec(),
                None => return Err(bad("not an Ed25519 SubjectPublicKeyInfo")),
            }
        } else {
            hex::decode(text).map_err(|_| bad("neither PEM nor 64 hex digits"))?
        };
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("an Ed25519 public key is 32 bytes"))?;
        Ok(PublicKey(key))
    }

    pub fn load(path: &Path) -> Result<PublicKey, CheckpointError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        PublicKey::parse(&text)
            .map_err(|e| CheckpointError::Key(format!("{}: {e}", path.display())))
    }
}

/// One signed statement: "the chain had `seq` entries, ending in `head`, at `at`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub format: String,
    /// Entries in the chain (the last one's sequence number).
    pub seq: i64,
    /// That entry's hash.
    pub head: String,
    /// When it was signed, RFC 3339 (signed as this exact text).
    pub at: String,
    /// The signing key's id ([`PublicKey::id`]).
    pub key: String,
    /// Ed25519 signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    fn message(seq: i64, head: &str, at: &str) -> String {
        format!("{FORMAT}\n{seq}\n{head}\n{at}")
    }

    pub fn sign(key: &SigningKey, seq: i64, head: &str, at: DateTime<Utc>) -> Checkpoint {
        let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let signature = hex::encode(key.sign(Checkpoint::message(seq, head, &at).as_bytes()));
        Checkpoint {
            format: FORMAT.into(),
            seq,
            head: head.into(),
            at,
            key: key.public().id(),
            signature,
        }
    }

    /// Whether `key` signed exactly this checkpoint.
    pub fn verify(&self, key: &PublicKey) -> bool {
        let Ok(sig) = hex::decode(&self.signature) else {
            return false;
        };
        self.format == FORMAT
            && UnparsedPublicKey::new(&ED25519, key.0)
                .verify(
                    Checkpoint::message(self.seq, &self.head, &self.at).as_bytes(),
                    &sig,
                )
                .is_ok()
    }

    pub fn signed_at(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Zero-padded so a directory listing sorts in chain order.
    pub fn file_name(&self) -> String {
        format!("checkpoint-{:012}.json", self.seq)
    }
}

/// Writes a checkpoint durably: to a temporary file, synced, then renamed into place, so a
/// crash never leaves half a checkpoint.
pub fn write(dir: &Path, cp: &Checkpoint) -> Result<PathBuf, CheckpointError> {
    use std::io::Write;
    let path = dir.join(cp.file_name());
    let tmp = dir.join(format!(".{}.tmp", cp.file_name()));
    let text = serde_json::to_string_pretty(cp).map_err(|e| CheckpointError::Malformed {
        file: cp.file_name(),
        problem: e.to_string(),
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.write_all(b"\n").map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Writes the public key beside the checkpoints (replacing a different one only if asked:
/// a node must not silently take over a directory another key signs into).
pub fn publish(dir: &Path, key: &PublicKey) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(PUBLIC_KEY_FILE);
    if path.exists() {
        let published = PublicKey::load(&path)?;
        if published != *key {
            return Err(CheckpointError::Key(format!(
                "{} holds key {}, not the configured signing key's {}: checkpoints signed by \
                 two keys would not verify with either; use another directory or move the old key",
                path.display(),
                published.id(),
                key.id()
            )));
        }
        return Ok(());
    }
    std::fs::write(&path, key.to_pem()).map_err(io(&path))
}

/// Every checkpoint file in `dir`, in chain order. A missing directory holds none. A file that
/// is not a checkpoint is an error naming it: something put it there.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, Checkpoint)>, CheckpointError> {
    let mut out = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for item in listing {
        let item = item.map_err(io(dir))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("checkpoint-") && name.ends_with(".json")) {
            continue;
        }
        let path = item.path();
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let cp: Checkpoint =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Malformed {
                file: name.clone(),
                problem: e.to_string(),
            })?;
        out.push((name, cp));
    }
    out.sort_by(|a, b| a.1.seq.cmp(&b.1.seq).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// Makes this node's checkpoints. Cheap to call [`Checkpointer::appended`] on every append.
pub struct Checkpointer {
    dir: PathBuf,
    key: SigningKey,
    every_entries: u64,
    every: Duration,
    /// The last checkpoint this node knows of (its own, or the newest in the directory at
    /// start-up); also serialises this node's checkpoints.
    last: Mutex<Option<Checkpoint>>,
    /// Entries appended through this node since its last checkpoint.
    appended: AtomicU64,
    wake: Notify,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("dir", &self.dir)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// `None` when no checkpoint directory is configured. A directory without a key is an error:
    /// an operator who asked for checkpoints must not silently run without them.
    pub fn from_config(cfg: &AuditConfig) -> Result<Option<Arc<Checkpointer>>, CheckpointError> {
        let Some(dir) = &cfg.checkpoint_dir else {
            return Ok(None);
        };
        let key = SigningKey::from_config(cfg)?.ok_or_else(|| {
            CheckpointError::Key(
                "audit.checkpoint_dir is set but no signing key is: set audit.signing_key_file \
                 or WEFT_AUDIT__SIGNING_KEY (`weft audit keygen` makes one)"
                    .into(),
            )
        })?;
        Checkpointer::new(
            dir.clone(),
            key,
            cfg.checkpoint_every_entries,
            Duration::from_secs(cfg.checkpoint_every_secs),
        )
        .map(Some)
    }

    pub fn new(
        dir: PathBuf,
        key: SigningKey,
        every_entries: u64,
        every: Duration,
    ) -> Result<Arc<Checkpointer>, CheckpointError> {
        let public = key.public();
        publish(&dir, &public)?;
        let last = load_dir(&dir)?
            .into_iter()
            .map(|(_, cp)| cp)
            .rfind(|cp| cp.verify(&public));
        Ok(Arc::new(Checkpointer {
            dir,
            key,
            every_entries: every_entries.max(1),
            every,
            last: Mutex::new(last),
            appended: AtomicU64::new(0),
            wake: Notify::new(),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Counts entries this node appended; wakes the checkpointer once enough have been.
    pub fn appended(&self, n: usize) {
        let total = self.appended.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total >= self.every_entries {
            self.wake.notify_one();
        }
    }

    /// Runs until aborted: a checkpoint whenever enough entries were appended here, and every
    /// `checkpoint_every_secs` if the head moved (entries from other nodes, or too few to count).
    pub async fn run(self: Arc<Self>, store: Store) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.every) => {}
            }
            if let Err(e) = self.checkpoint(&store).await {
                crate::foundation::metrics::AUDIT_CHECKPOINT_FAILURES.inc();
                tracing::error!(error = %e, "audit checkpoint not made");
                // Not in a tight loop if the cause persists.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Signs the current head if it moved since the last checkpoint. Returns the checkpoint
    /// made, or `None` if there was nothing new to sign.
    pub async fn checkpoint(&self, store: &Store) -> Result<Option<Checkpoint>, CheckpointError> {
        let mut last = self.last.lock().await;
        self.appended.store(0, Ordering::Relaxed);
        // The head is read under its lock, so it is the committed head every writer (on any
        // node) will extend next; nobody can be half-way through moving it.
        let mut tx = store.begin_write().await?;
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let seq: i64 = row.try_get("seq")?;
        let head: String = row.try_get("hash")?;
        let at = Utc::now();
        tx.rollback().await?;
        let from = match &*last {
            Some(l) if l.seq > seq => {
                return Err(CheckpointError::Diverged(format!(
                    "the chain ends at entry {seq} but entry {} was signed",
                    l.seq
                )))
            }
            Some(l) if l.seq == seq => {
                if l.head != head {
                    return Err(CheckpointError::Diverged(format!(
                        "entry {seq}'s hash is not the one signed"
                    )));
                }
                return Ok(None);
            }
            Some(l) => Some((l.seq, l.head.clone())),
            None if seq == 0 => return Ok(None),
            None => None,
        };
        // Entries up to the head are committed and only ever appended to, so they are checked
        // without holding the lock: writers are not kept waiting while this node hashes.
        let walked = super::walk_store(store, from, seq).await?;
        if let Some(p) = walked.problem {
            return Err(CheckpointError::Diverged(p.what));
        }
        let cp = Checkpoint::sign(&self.key, seq, &head, at);
        let dir = self.dir.clone();
        let written = cp.clone();
        tokio::task::spawn_blocking(move || write(&dir, &written))
            .await
            .map_err(|e| CheckpointError::Io {
                path: self.dir.display().to_string(),
                source: std::io::Error::other(e),
            })??;
        crate::foundation::metrics::AUDIT_CHECKPOINTS.inc();
        *last = Some(cp.clone());
        Ok(Some(cp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_their_key_and_text() {
        let (key, text) = SigningKey::generate().unwrap();
        assert_eq!(SigningKey::from_hex(&text).unwrap().public(), key.public());
        let cp = Checkpoint::sign(&key, 42, &"ab".repeat(32), Utc::now());
        assert!(cp.verify(&key.public()));
        let pem = key.public().to_pem();
        assert_eq!(PublicKey::parse(&pem).unwrap(), key.public());

        let mut moved = cp.clone();
        moved.seq = 41;
        assert!(!moved.verify(&key.public()));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(!cp.verify(&other.public()));
    }

    #[test]
    fn key_errors_never_echo_the_key() {
        let secret = "zz".repeat(32);
        let e = SigningKey::from_hex(&secret).unwrap_err().to_string();
        assert!(!e.contains(&secret), "{e}");
        let short = "ab".repeat(16);
        let e = SigningKey::from_hex(&short).unwrap_err().to_string();
        assert!(!e.contains(&short), "{e}");
    }

    #[test]
    fn a_directory_signed_by_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = SigningKey::generate().unwrap();
        let (b, _) = SigningKey::generate().unwrap();
        publish(dir.path(), &a.public()).unwrap();
        publish(dir.path(), &a.public()).unwrap();
        assert!(publish(dir.path(), &b.public()).is_err());
    }
}
