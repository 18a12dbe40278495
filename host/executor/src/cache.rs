//! The compiled-artifact cache: one file of native code per module, engine
//! flavor and wasmtime build, named by what it holds, so that a module is
//! compiled once per machine rather than once per process.
//!
//! Files are `HASH-FLAGS-ENGINE.cwasm` (the module's SHA-256, `f` for fuel
//! metering and `e` for epoch deadlines, and a digest of wasmtime's own
//! compatibility hash), written whole to a temporary file and renamed into
//! place, so that many processes may share one directory: a reader sees a
//! complete artifact or none. Each use refreshes a file's modification time;
//! past the size bound, the least recently used files are removed first.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use asyncer_protocol::EngineFlavor;

use crate::Error;

/// The file name ending of artifacts.
const ARTIFACT_SUFFIX: &str = ".cwasm";

/// A directory of compiled artifacts, shared by every executor (and every
/// process) that opens it.
///
/// # Examples
/// ```no_run
/// use asyncer::ArtifactCache;
///
/// let cache = ArtifactCache::open("/var/cache/myapp/asyncer")?;
/// for entry in cache.entries()? {
///     println!("{} {} {} bytes", entry.module_hash, entry.flavor, entry.bytes);
/// }
/// cache.clear()?;
/// # Ok::<(), asyncer::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    max_bytes: Option<u64>,
}

/// One artifact in an [`ArtifactCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheEntry {
    /// Hex SHA-256 of the module it was compiled from.
    pub module_hash: String,
    /// The engine flavor: `plain`, `fuel`, `epoch` or `fuel+epoch`.
    pub flavor: String,
    /// Which wasmtime build and settings it is for (a digest); artifacts of
    /// other builds stay until evicted or cleared.
    pub engine: String,
    /// Its size on disk.
    pub bytes: u64,
    /// When it was last written or loaded.
    pub last_used: SystemTime,
    /// The file.
    pub path: PathBuf,
}

/// What [`ArtifactCache::clear`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cleared {
    /// Files removed.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
}

impl ArtifactCache {
    /// The default bound of a cache given to [`ExecutorBuilder::cache_dir`]
    /// (1 GiB), unless [`ExecutorBuilder::cache_max_bytes`] sets another.
    ///
    /// [`ExecutorBuilder::cache_dir`]: crate::ExecutorBuilder::cache_dir
    /// [`ExecutorBuilder::cache_max_bytes`]: crate::ExecutorBuilder::cache_max_bytes
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

    /// Opens (making it, private to this user, if missing) the cache in
    /// `dir`, without a size bound.
    ///
    /// # Errors
    /// [`Error::Cache`] when the directory cannot be made, or when another
    /// user owns it or may write to it: workers run the native code in it,
    /// so it must be as private as the program itself.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::cache(&dir, e))?;
        asyncer_worker::artifact::trusted_dir(&dir).map_err(|message| {
            Error::cache(
                &dir,
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, message),
            )
        })?;
        Ok(ArtifactCache {
            dir,
            max_bytes: None,
        })
    }

    /// Keeps the cache at most `max_bytes` large (checked after each new
    /// artifact) by removing the least recently used artifacts; the one just
    /// written always stays, even when it alone is larger.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size bound, if any.
    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// Every artifact, most recently used first.
    ///
    /// # Errors
    /// [`Error::Cache`] when the directory cannot be read.
    pub fn entries(&self) -> Result<Vec<CacheEntry>, Error> {
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(|e| Error::cache(&self.dir, e))? {
            let item = item.map_err(|e| Error::cache(&self.dir, e))?;
            let name = item.file_name();
            let Some((module_hash, flags, engine)) = name.to_str().and_then(parse_name) else {
                continue;
            };
            // A file removed meanwhile (by another process) is skipped.
            let Ok(meta) = item.metadata() else { continue };
            entries.push(CacheEntry {
                module_hash: module_hash.to_owned(),
                flavor: flavor_name(flags).to_owned(),
                engine: engine.to_owned(),
                bytes: meta.len(),
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path: item.path(),
            });
        }
        entries.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.path.cmp(&b.path)));
        Ok(entries)
    }

    /// Removes every artifact (and any temporary file a crashed writer left).
    ///
    /// # Errors
    /// [`Error::Cache`] when the directory cannot be read or a file cannot
    /// be removed.
    pub fn clear(&self) -> Result<Cleared, Error> {
        let mut cleared = Cleared::default();
        for item in std::fs::read_dir(&self.dir).map_err(|e| Error::cache(&self.dir, e))? {
            let item = item.map_err(|e| Error::cache(&self.dir, e))?;
            let name = item.file_name();
            let ours = name
                .to_str()
                .is_some_and(|n| parse_name(n).is_some() || n.starts_with(TEMP_PREFIX));
            if !ours {
                continue;
            }
            let bytes = item.metadata().map_or(0, |m| m.len());
            match std::fs::remove_file(item.path()) {
                Ok(()) => {
                    cleared.files += 1;
                    cleared.bytes += bytes;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::cache(item.path(), e)),
            }
        }
        Ok(cleared)
    }

    /// Where the artifact of module `hash` for `flavor` on `engine` lives.
    pub(crate) fn path_for(
        &self,
        hash: &str,
        flavor: EngineFlavor,
        engine: &wasmtime::Engine,
    ) -> PathBuf {
        let flags = match (flavor.fuel, flavor.epoch) {
            (false, false) => "",
            (true, false) => "f",
            (false, true) => "e",
            (true, true) => "fe",
        };
        self.dir.join(format!(
            "{hash}-{flags}-{}{ARTIFACT_SUFFIX}",
            compatibility_key(engine)
        ))
    }

    /// Marks `path` as just used (for the eviction order); a failure only
    /// makes it look older.
    pub(crate) fn touch(path: &Path) {
        let now = SystemTime::now();
        if let Ok(file) = std::fs::File::options().write(true).open(path) {
            let _ = file.set_times(std::fs::FileTimes::new().set_modified(now));
        }
    }

    /// Writes `bytes` to `path` atomically (a complete file or none, also
    /// when other processes write the same one), then keeps the bound.
    pub(crate) fn store(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(|e| Error::cache(&self.dir, e))?;
        tmp.write_all(bytes)
            .map_err(|e| Error::cache(tmp.path(), e))?;
        tmp.persist(path).map_err(|e| Error::cache(path, e.error))?;
        if let Some(max) = self.max_bytes {
            if let Err(e) = self.evict_to(max, path) {
                tracing::warn!(error = %e, "cannot keep the artifact cache within its bound");
            }
        }
        Ok(())
    }

    /// Removes the least recently used artifacts but `keep` until the rest
    /// take at most `max_bytes`.
    fn evict_to(&self, max_bytes: u64, keep: &Path) -> Result<(), Error> {
        let entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        for entry in entries.iter().rev() {
            if total <= max_bytes {
                break;
            }
            if entry.path == keep {
                continue;
            }
            match std::fs::remove_file(&entry.path) {
                Ok(()) => {
                    tracing::debug!(file = %entry.path.display(), bytes = entry.bytes, "evicted from the artifact cache");
                    total -= entry.bytes;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= entry.bytes,
                Err(e) => return Err(Error::cache(&entry.path, e)),
            }
        }
        Ok(())
    }
}

/// How temporary files in the cache begin.
const TEMP_PREFIX: &str = ".tmp-";

/// `(module hash, flags, engine)` of an artifact's file name.
fn parse_name(name: &str) -> Option<(&str, &str, &str)> {
    let stem = name.strip_suffix(ARTIFACT_SUFFIX)?;
    let mut parts = stem.split('-');
    let (hash, flags, engine) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let known_flags = matches!(flags, "" | "f" | "e" | "fe");
    (parts.next().is_none() && hash.len() == 64 && hex(hash) && hex(engine) && known_flags)
        .then_some((hash, flags, engine))
}

fn flavor_name(flags: &str) -> &'static str {
    match flags {
        "f" => "fuel",
        "e" => "epoch",
        "fe" => "fuel+epoch",
        _ => "plain",
    }
}

/// Names what an engine's compiled code is compatible with, from wasmtime's
/// own [`wasmtime::Engine::precompile_compatibility_hash`] (its version,
/// target and every setting that changes compiled code): artifacts of
/// engines that cannot load each other's code never share a file name.
fn compatibility_key(engine: &wasmtime::Engine) -> String {
    use sha2::{Digest, Sha256};
    use std::hash::{Hash, Hasher};

    /// Feeds `Hash` output to SHA-256: stable across builds and platforms,
    /// unlike `DefaultHasher`.
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            unreachable!("only the digest is read")
        }
    }

    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    crate::module::hex(&hasher.0.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const HASH_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn aged(path: &Path, seconds_ago: u64) {
        let then = SystemTime::now() - Duration::from_secs(seconds_ago);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(then))
            .unwrap();
    }

    #[test]
    fn names_parse_and_strangers_are_left_alone() {
        assert_eq!(
            parse_name(&format!("{HASH_A}-fe-0123abcd.cwasm")),
            Some((HASH_A, "fe", "0123abcd"))
        );
        assert_eq!(
            parse_name(&format!("{HASH_A}--0123abcd.cwasm")),
            Some((HASH_A, "", "0123abcd"))
        );
        for stranger in [
            "notes.txt",
            "abc--0123.cwasm",
            &format!("{HASH_A}-x-0123.cwasm"),
            &format!("{HASH_A}-f-0123-9.cwasm"),
        ] {
            assert_eq!(parse_name(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_new_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path().join("c")).unwrap();
        let dir = cache.dir().to_owned();
        let file = |hash: &str| dir.join(format!("{hash}-f-00ff{ARTIFACT_SUFFIX}"));
        std::fs::write(file(HASH_A), [0u8; 100]).unwrap();
        std::fs::write(file(HASH_B), [0u8; 100]).unwrap();
        std::fs::write(cache.dir().join("README"), b"not ours").unwrap();
        aged(&file(HASH_A), 30);
        aged(&file(HASH_B), 60);
        // A used recently: B is the least recently used.
        ArtifactCache::touch(&file(HASH_A));
        let cache = cache.with_max_bytes(250);
        cache.store(&file(HASH_C), &[1u8; 100]).unwrap();
        let left: Vec<_> = cache
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.module_hash)
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&HASH_A.to_owned()) && left.contains(&HASH_C.to_owned()));
        // A bound smaller than one artifact keeps only the newest.
        let cache = cache.with_max_bytes(1);
        cache.store(&file(HASH_B), &[2u8; 100]).unwrap();
        let entries = cache.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].module_hash, HASH_B);
        assert_eq!(entries[0].flavor, "fuel");
        assert_eq!(std::fs::read(file(HASH_B)).unwrap(), vec![2u8; 100]);
        // Clearing removes artifacts and nothing else.
        assert_eq!(
            cache.clear().unwrap(),
            Cleared {
                files: 1,
                bytes: 100
            }
        );
        assert!(cache.entries().unwrap().is_empty());
        assert!(cache.dir().join("README").exists());
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = ArtifactCache::open(&shared).unwrap_err();
        assert!(matches!(error, Error::Cache { .. }));
        assert!(error.to_string().contains("other users"), "{error}");
        // A new one is made private.
        let fresh = dir.path().join("a/b/fresh");
        ArtifactCache::open(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
