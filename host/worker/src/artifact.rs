//! Precompiled artifacts on disk: the one place that turns a file back into
//! code, and the check that decides whether a directory's files may be.

use std::path::Path;

use wasmtime::{Engine, Module};

/// Loads a precompiled artifact (written by `Module::serialize` for an engine
/// with `engine`'s settings) by memory-mapping it.
///
/// wasmtime checks the file's header, its version and every setting that
/// changes compiled code, and refuses anything else; what it cannot check is
/// that the machine code inside is the code it wrote. So this reads only
/// files that asyncer wrote itself into a directory nobody else may write:
/// an executor's private cache, or a caller-given one that
/// [`trusted_dir`] accepted.
///
/// # Errors
/// The file cannot be read or is not an artifact for this engine.
pub fn open(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // SAFETY: see above: the file was written by `Module::serialize` (or is
    // refused by wasmtime's own checks), under a content-addressed name that
    // is replaced only by an atomic rename, in a directory only this user
    // can write to.
    #[allow(unsafe_code)]
    unsafe {
        Module::deserialize_file(engine, path)
    }
}

/// Whether `dir`'s artifacts may be loaded: it must be a directory owned by
/// this process's user (or root) that neither its group nor others may
/// write to, since whoever can write a file there can run machine code in
/// every process that loads it.
///
/// # Errors
/// What is wrong with the directory.
pub fn trusted_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to user {}, not to this user ({me})",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{} may be written by other users (mode {:o})",
            dir.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_private_directories_are_trusted() {
        let dir = tempfile_dir();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(trusted_dir(&dir), Ok(()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(trusted_dir(&dir).unwrap_err().contains("other users"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(trusted_dir(&dir), Ok(()));
        let file = dir.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(trusted_dir(&file).unwrap_err().contains("not a directory"));
        assert!(trusted_dir(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_is_refused_not_loaded() {
        let dir = tempfile_dir();
        let path = dir.join("junk.cwasm");
        std::fs::write(&path, b"\x7fELF but not really an artifact").unwrap();
        let engine = crate::new_engine(Default::default()).unwrap();
        assert!(open(&engine, &path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "asyncer-artifact-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
