//! Paths inside the connection's directory: validating flow-given names, matching globs,
//! walking folders and expanding destination placeholders. Nothing here ever leaves the
//! directory: `..` and absolute paths are refused and symbolic links pointing outside are skipped.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use etl_model::{ConnectorError, Props};

/// The configured directory, as given (not required to exist).
pub fn configured_dir(conn: &Props) -> Result<PathBuf, ConnectorError> {
    let dir = conn.get("directory").ok_or_else(|| {
        ConnectorError::config(
            "missing required property 'directory' (the folder holding the files, e.g. \
             directory=/data/files)",
        )
    })?;
    Ok(PathBuf::from(dir.trim()))
}

/// The directory, which must exist, canonicalised so containment checks compare real paths.
pub fn existing_root(dir: &Path) -> Result<PathBuf, ConnectorError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => fs::canonicalize(dir).map_err(|e| io_error("open", dir, &e)),
        Ok(_) => Err(ConnectorError::config(format!(
            "directory '{}' is a file, not a folder; set directory= to the folder that holds the files",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ConnectorError::not_found(format!(
            "directory '{}' does not exist; create it, or fix the connection's directory property",
            dir.display()
        ))),
        Err(e) => Err(io_error("open", dir, &e)),
    }
}

/// An I/O failure as an actionable sentence; permission problems say so.
pub fn io_error(action: &str, path: &Path, e: &io::Error) -> ConnectorError {
    let hint = match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "; the server's user lacks permission: grant it access or choose another directory"
        }
        io::ErrorKind::NotFound => "; check that it exists",
        io::ErrorKind::StorageFull => "; the disk is full: free space and run again",
        io::ErrorKind::NotADirectory => {
            "; part of the path is a file, not a folder: fix the directory or the file name"
        }
        _ => "",
    };
    ConnectorError::new(
        match e.kind() {
            io::ErrorKind::NotFound => etl_model::ErrorKind::NotFound,
            io::ErrorKind::NotADirectory => etl_model::ErrorKind::Config,
            io::ErrorKind::PermissionDenied => etl_model::ErrorKind::Connect,
            _ => etl_model::ErrorKind::Read,
        },
        format!("could not {action} '{}': {e}{hint}", path.display()),
    )
}

/// Refuses names that would leave the directory: absolute paths, drive prefixes and `..`.
/// `what` says which property holds the name (`object`, `target`).
pub fn check_relative(name: &str, what: &str, dir: &Path) -> Result<(), ConnectorError> {
    let refuse = |why: &str| {
        Err(ConnectorError::config(format!(
            "{what} '{name}' {why}; name files relative to the connection's directory '{}', \
             without '..' or a leading '/'",
            dir.display()
        )))
    };
    if name.trim().is_empty() {
        return Err(ConnectorError::config(format!(
            "{what} is empty; name a file or a glob relative to '{}', e.g. orders/*.csv",
            dir.display()
        )));
    }
    if name.starts_with('/') || name.starts_with('\\') || name.starts_with('~') {
        return refuse("is an absolute path");
    }
    if name.len() >= 2 && name.as_bytes()[1] == b':' && name.as_bytes()[0].is_ascii_alphabetic() {
        return refuse("is an absolute path");
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return refuse("leaves the directory");
    }
    if Path::new(name)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return refuse("leaves the directory");
    }
    Ok(())
}

/// Whether a name holds glob syntax (otherwise it names one file exactly).
pub fn is_glob(name: &str) -> bool {
    name.contains(['*', '?', '[', '{'])
}

/// One file chosen for reading.
#[derive(Clone, Debug)]
pub struct Matched {
    /// Path relative to the directory, with `/` separators: what logs, errors and `_file` show.
    pub rel: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Files a source object names, in sorted order, plus warnings about skipped links.
pub fn find_files(
    root: &Path,
    pattern: &str,
) -> Result<(Vec<Matched>, Vec<String>), ConnectorError> {
    check_relative(pattern, "object", root)?;
    let pattern = pattern.trim().trim_start_matches("./");
    if !is_glob(pattern) {
        return exact_file(root, pattern).map(|m| (vec![m], Vec::new()));
    }
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| {
            ConnectorError::config(format!(
                "object '{pattern}' is not a valid glob: {e}; use * for any name, ** for any \
                 folders, ? for one character, e.g. orders/**/*.csv"
            ))
        })?
        .compile_matcher();
    // Walk only below the glob's literal folder prefix: `orders/2024/*.csv` never scans siblings.
    let base: Vec<&str> = pattern.split('/').take_while(|c| !is_glob(c)).collect();
    let base_rel = if base.len() == pattern.split('/').count() {
        String::new()
    } else {
        base.join("/")
    };
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    walk(root, &base_rel, &mut warnings, &mut |rel, path, size| {
        if glob.is_match(rel) {
            found.push(Matched {
                rel: rel.to_string(),
                path: path.to_path_buf(),
                size,
            });
        }
        true
    })?;
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    if found.is_empty() {
        return Err(ConnectorError::not_found(format!(
            "no file in directory '{}' matches '{pattern}'; the pattern is relative to the \
             directory and * does not cross folders (use **/ for sub-folders); run 'list objects' \
             on the connection to see the files",
            root.display()
        )));
    }
    Ok((found, warnings))
}

fn exact_file(root: &Path, name: &str) -> Result<Matched, ConnectorError> {
    let path = root.join(name);
    match fs::metadata(&path) {
        Ok(m) if m.is_file() => {
            let real = fs::canonicalize(&path).map_err(|e| io_error("open", &path, &e))?;
            if !real.starts_with(root) {
                return Err(ConnectorError::config(format!(
                    "'{name}' is a link to '{}', outside the directory '{}'; the file connector \
                     only reads inside its directory: copy the file in or point a connection at \
                     its folder",
                    real.display(),
                    root.display()
                )));
            }
            Ok(Matched {
                rel: name.replace('\\', "/"),
                path,
                size: m.len(),
            })
        }
        Ok(_) => Err(ConnectorError::config(format!(
            "'{name}' in '{}' is a folder, not a file; name the files in it with a glob, e.g. \
             {}/*.csv",
            root.display(),
            name.trim_end_matches('/')
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ConnectorError::not_found(format!(
            "file '{name}' not found in directory '{}'; run 'list objects' on the connection to \
             see the files, or use a glob such as *.csv",
            root.display()
        ))),
        Err(e) => Err(io_error("open", &path, &e)),
    }
}

/// Visits every regular file below `root/base_rel` (recursively, hidden entries and links to
/// folders skipped) with its relative path, full path and size. The visitor answers `false` to
/// stop early.
pub fn walk(
    root: &Path,
    base_rel: &str,
    warnings: &mut Vec<String>,
    visit: &mut dyn FnMut(&str, &Path, u64) -> bool,
) -> Result<(), ConnectorError> {
    let start = if base_rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(base_rel)
    };
    if !start.is_dir() {
        return Ok(());
    }
    // The glob's folder prefix may itself be a link leading elsewhere.
    if !fs::canonicalize(&start).is_ok_and(|real| real.starts_with(root)) {
        warnings.push(format!(
            "skipped folder '{base_rel}': it links outside the directory"
        ));
        return Ok(());
    }
    let mut stack = vec![(start, base_rel.to_string())];
    while let Some((dir, rel_dir)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            // The directory itself must be readable; a sub-folder we cannot open is reported
            // as a warning so one locked folder does not stop a recursive glob.
            Err(e) if dir.as_path() != root => {
                warnings.push(format!("skipped folder '{rel_dir}': {e}"));
                continue;
            }
            Err(e) => return Err(io_error("list", &dir, &e)),
        };
        let mut names: Vec<(String, PathBuf, fs::FileType)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &dir, &e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Hidden files include our own in-progress `.name.run.tmp` files: never read those.
            if name.starts_with('.') {
                continue;
            }
            let ft = entry
                .file_type()
                .map_err(|e| io_error("inspect", &entry.path(), &e))?;
            names.push((name, entry.path(), ft));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, path, ft) in names {
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            if ft.is_dir() {
                subdirs.push((path, rel));
            } else if ft.is_file() {
                let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if !visit(&rel, &path, size) {
                    return Ok(());
                }
            } else if ft.is_symlink() {
                let target = fs::metadata(&path).ok().filter(|m| m.is_file());
                let inside = fs::canonicalize(&path).is_ok_and(|real| real.starts_with(root));
                // Links to folders are not followed: they could loop or leave the directory.
                if let Some(m) = target {
                    if !inside {
                        warnings.push(format!(
                            "skipped '{rel}': it links to a file outside the directory"
                        ));
                    } else if !visit(&rel, &path, m.len()) {
                        return Ok(());
                    }
                }
            }
        }
        // Reverse so the stack pops folders in name order (callers sort the final list).
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Placeholders a destination file name may hold.
pub const PLACEHOLDERS: &[&str] = &["{run_id}", "{date}", "{time}", "{timestamp}"];

/// Expands `{run_id}`, `{date}` (YYYYMMDD), `{time}` (HHMMSS) and `{timestamp}`
/// (YYYYMMDDHHMMSS), all in UTC.
pub fn expand_placeholders(
    pattern: &str,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<String, ConnectorError> {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after.find('}').ok_or_else(|| {
            ConnectorError::config(format!(
                "target '{pattern}' has a '{{' without a closing '}}'; placeholders are {}",
                PLACEHOLDERS.join(", ")
            ))
        })?;
        let name = &after[1..end];
        match name {
            "run_id" => out.push_str(&sanitize(run_id)),
            "date" => out.push_str(&now.format("%Y%m%d").to_string()),
            "time" => out.push_str(&now.format("%H%M%S").to_string()),
            "timestamp" => out.push_str(&now.format("%Y%m%d%H%M%S").to_string()),
            other => {
                return Err(ConnectorError::config(format!(
                    "unknown placeholder '{{{other}}}' in target '{pattern}'; use {}",
                    PLACEHOLDERS.join(", ")
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Keeps a run id usable inside a file name whatever the engine chose.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn relative_names_only() {
        let d = Path::new("/data");
        assert!(check_relative("orders/*.csv", "object", d).is_ok());
        assert!(check_relative("./a.csv", "object", d).is_ok());
        for bad in [
            "../x.csv",
            "a/../../x",
            "/etc/passwd",
            "C:\\x.csv",
            "a\\..\\b",
            "~/x",
            "",
        ] {
            assert!(check_relative(bad, "object", d).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders() {
        let now = Utc.with_ymd_and_hms(2024, 3, 5, 7, 8, 9).unwrap();
        assert_eq!(
            expand_placeholders("out/o_{date}_{time}_{run_id}.csv", "r/1", now).unwrap(),
            "out/o_20240305_070809_r_1.csv"
        );
        assert_eq!(
            expand_placeholders("{timestamp}.json", "r", now).unwrap(),
            "20240305070809.json"
        );
        let err = expand_placeholders("o_{day}.csv", "r", now).unwrap_err();
        assert!(err.message.contains("'{day}'"), "{}", err.message);
        assert!(expand_placeholders("o_{date.csv", "r", now).is_err());
    }
}
