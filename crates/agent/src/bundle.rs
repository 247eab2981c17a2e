//! An app's files as one content-addressed, compressed bundle: a gzipped
//! tar of the app's directory in a canonical form (entries sorted, owner,
//! times and modes normalised), named by the BLAKE3 hash of its bytes. The
//! same files give the same id on every machine, so a node fetches an app
//! once and checks what it got.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest app directory shipped to a joined node, before compression.
pub const APP_BYTES_MAX: u64 = 16 << 20;
/// Largest bundle accepted over the network (compression only shrinks a
/// well-formed one; the margin covers tar's headers).
pub const BUNDLE_BYTES_MAX: usize = (APP_BYTES_MAX as usize) + (1 << 20);

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} is over {APP_BYTES_MAX} bytes")]
    TooLarge(PathBuf),
    #[error("the bundle's hash is {actual}, not {expected}: it was damaged or replaced")]
    Mismatch { expected: String, actual: String },
    #[error("the bundle entry {0:?} would land outside its directory")]
    Escapes(String),
    #[error(
        "{0} is a symbolic link: an app ships only its own regular files and directories (copy what it points to into the app instead)"
    )]
    Symlink(PathBuf),
    #[error("{0} is not a regular file or a directory: an app ships only those")]
    NotAFile(PathBuf),
    #[error("the bundle entry {0:?} is a {1}: a bundle holds only regular files")]
    NotRegular(String, String),
    #[error("the bundle is malformed: {0}")]
    Malformed(String),
}

/// A packed app: its id (BLAKE3 of `bytes`, hex) and its bytes.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub id: String,
    pub bytes: Vec<u8>,
}

/// The id of `bytes`.
pub fn id_of(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Refuses `dir` unless it holds only regular files and directories, in
/// all at most [`APP_BYTES_MAX`] bytes: what [`pack`] would refuse, said
/// before a deployment is recorded. A symbolic link is never followed.
pub fn check(dir: &Path) -> Result<(), BundleError> {
    collect(dir, dir, &mut Vec::new(), &mut 0)
}

/// Packs the files under `dir` (regular files and directories; symbolic
/// links, which are never followed, and the like are refused, so a bundle
/// holds only the app).
pub fn pack(dir: &Path) -> Result<Bundle, BundleError> {
    let mut files = Vec::new();
    let mut total = 0;
    collect(dir, dir, &mut files, &mut total)?;
    files.sort();
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Deterministic);
    for (relative, path) in &files {
        let data = std::fs::read(path).map_err(|e| BundleError::Io(path.clone(), e))?;
        // Whether it may be run is kept (a start script), nothing else.
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(|e| BundleError::Io(path.clone(), e))?.permissions().mode();
            mode & 0o111 != 0
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, relative, data.as_slice()).map_err(|e| BundleError::Io(path.clone(), e))?;
    }
    let encoder = tar.into_inner().map_err(|e| BundleError::Io(dir.to_owned(), e))?;
    let bytes = encoder.finish().map_err(|e| BundleError::Io(dir.to_owned(), e))?;
    Ok(Bundle { id: id_of(&bytes), bytes })
}

/// Checks `bytes` against `expected` and unpacks them into `into` (created
/// if needed). An entry that is not a plain file or that would land outside
/// `into` refuses the whole bundle.
pub fn unpack(bytes: &[u8], expected: &str, into: &Path) -> Result<(), BundleError> {
    let actual = id_of(bytes);
    if actual != expected {
        return Err(BundleError::Mismatch { expected: expected.to_owned(), actual });
    }
    std::fs::create_dir_all(into).map_err(|e| BundleError::Io(into.to_owned(), e))?;
    let decoder = flate2::read::GzDecoder::new(bytes).take(APP_BYTES_MAX * 2);
    let mut archive = tar::Archive::new(decoder);
    let entries = archive.entries().map_err(|e| BundleError::Malformed(e.to_string()))?;
    let mut total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| BundleError::Malformed(e.to_string()))?;
        let path = entry.path().map_err(|e| BundleError::Malformed(e.to_string()))?.into_owned();
        let shown = path.display().to_string();
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(BundleError::NotRegular(shown, format!("{kind:?}").to_lowercase()));
        }
        if path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(BundleError::Escapes(shown));
        }
        total = total.saturating_add(entry.size());
        if total > APP_BYTES_MAX {
            return Err(BundleError::TooLarge(into.to_owned()));
        }
        let target = into.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| BundleError::Io(parent.to_owned(), e))?;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| BundleError::Malformed(e.to_string()))?;
        std::fs::write(&target, data).map_err(|e| BundleError::Io(target.clone(), e))?;
        if entry.header().mode().is_ok_and(|mode| mode & 0o111 != 0) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| BundleError::Io(target.clone(), e))?;
        }
    }
    Ok(())
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>, total: &mut u64) -> Result<(), BundleError> {
    let io = |e| BundleError::Io(dir.to_owned(), e);
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        // The entry itself, never what a link points to.
        let kind = entry.file_type().map_err(io)?;
        if kind.is_symlink() {
            return Err(BundleError::Symlink(path));
        }
        if kind.is_dir() {
            collect(root, &path, files, total)?;
        } else if kind.is_file() {
            *total += entry.metadata().map_err(io)?.len();
            if *total > APP_BYTES_MAX {
                return Err(BundleError::TooLarge(root.to_owned()));
            }
            let relative = path.strip_prefix(root).map_err(|e| BundleError::Malformed(e.to_string()))?;
            files.push((relative.to_string_lossy().into_owned(), path));
        } else {
            return Err(BundleError::NotAFile(path));
        }
    }
    Ok(())
}
