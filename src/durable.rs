//! Files that must survive a crash as a whole: written to a temporary file beside the
//! target, flushed to disk, renamed over the target, and the directory flushed, so that
//! after a crash or a power loss the file holds either the old or the new content, never a
//! part of either; and read so that a file that cannot be read is an error, never "no
//! file" (only a file that is absent is absent).

use std::{
    io::{self, Write},
    path::Path,
};

/// Writes `bytes` to `path` atomically and durably (see the module doc).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The content of `path`: `None` only when it does not exist; any other failure to read it
/// is an error.
pub fn read_if_present(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The random id kept in `path`, created (128 random bits, hex) and written durably the
/// first time; the same id ever after. A file that cannot be read, or does not hold an id,
/// is an error: never replaced by a new id, which would make the holder a stranger to
/// what it did before.
pub fn read_or_create_id(path: &Path) -> io::Result<String> {
    if let Some(bytes) = read_if_present(path)? {
        let id = String::from_utf8_lossy(&bytes).trim().to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not hold an id", path.display()),
            ));
        }
        return Ok(id);
    }
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| io::Error::other("no system randomness"))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_atomic(path, id.as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("record.json");
        assert_eq!(read_if_present(&path).unwrap(), None);
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(
            read_if_present(&path).unwrap().as_deref(),
            Some(&b"two"[..])
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["record.json"]);
    }

    #[test]
    fn an_id_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c").join("identity");
        let id = read_or_create_id(&path).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(read_or_create_id(&path).unwrap(), id);
        let other = read_or_create_id(&dir.path().join("d").join("identity")).unwrap();
        assert_ne!(other, id);
        std::fs::write(&path, b"not an id").unwrap();
        assert!(read_or_create_id(&path).is_err(), "never replaced");
    }

    #[test]
    fn an_unreadable_file_is_an_error_not_an_absent_one() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as one.
        let path = dir.path().join("record.json");
        std::fs::create_dir(&path).unwrap();
        assert!(read_if_present(&path).is_err());
    }
}
