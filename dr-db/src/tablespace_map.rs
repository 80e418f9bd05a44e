//! Where a restored cluster's tablespaces go.
//!
//! A copy-mode base backup stores each tablespace's contents under `pg_tblspc/<oid>/` and
//! records PostgreSQL's `tablespace_map` (`<oid> <original path>` per line). A restore must
//! not write into the original locations (they belong to the running cluster, usually on the
//! same host), so each tablespace goes to a new directory: the one given for its original
//! path (`drctl restore --tablespace-map OLD=NEW`), else `<pgdata>-tablespace-<oid>` beside
//! the restored data directory. Every target must be missing or empty; that is checked
//! before anything is written. After unpacking, each `pg_tblspc/<oid>` directory is moved
//! to its target, replaced by a link to it, and `tablespace_map` is rewritten with the new
//! paths (PostgreSQL recreates the links from it when recovery starts).

use std::path::{Path, PathBuf};

use dr_core::{Error, ErrorKind, Result};

/// Refuse a data directory that holds anything ([`ErrorKind::NotEmpty`]); create a missing
/// one with mode 0700 (the server refuses any other).
pub fn prepare_empty_pgdata(pgdata: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e| Error::io(format!("cannot prepare {}", pgdata.display()), e);
    match std::fs::read_dir(pgdata) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::new(
                    ErrorKind::NotEmpty,
                    format!(
                        "{} is not empty: a physical restore writes a whole data directory and \
                         never overwrites one (remove it, or choose another directory)",
                        pgdata.display()
                    ),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(pgdata).map_err(io)?;
        }
        Err(e) => return Err(io(e)),
    }
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// One tablespace of a backup and where it is restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocation {
    /// The tablespace's OID (the name of its link in `pg_tblspc`).
    pub oid: String,
    /// Where it was when the backup was taken.
    pub original: PathBuf,
    /// Where it is restored.
    pub target: PathBuf,
}

/// Parse a `tablespace_map` text.
pub fn parse(text: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (oid, path) = line.split_once(' ').ok_or_else(|| {
            Error::corrupt(format!(
                "tablespace_map line '{line}' is not '<oid> <path>'"
            ))
        })?;
        if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::corrupt(format!(
                "tablespace_map line '{line}' does not start with an OID"
            )));
        }
        out.push((oid.to_string(), PathBuf::from(path)));
    }
    Ok(out)
}

/// Where each tablespace of `map` goes when `pgdata` is restored, given `--tablespace-map`
/// pairs (original → new). Every target is created if missing and must be empty.
pub fn plan(pgdata: &Path, map: &str, given: &[(PathBuf, PathBuf)]) -> Result<Vec<Relocation>> {
    let pgdata = std::path::absolute(pgdata)
        .map_err(|e| Error::io(format!("cannot resolve {}", pgdata.display()), e))?;
    let mut out = Vec::new();
    for (oid, original) in parse(map)? {
        let target = given
            .iter()
            .find(|(old, _)| *old == original)
            .map(|(_, new)| new.clone())
            .unwrap_or_else(|| {
                let mut p = pgdata.clone().into_os_string();
                p.push(format!("-tablespace-{oid}"));
                PathBuf::from(p)
            });
        let target = std::path::absolute(&target)
            .map_err(|e| Error::io(format!("cannot resolve {}", target.display()), e))?;
        if target.starts_with(&pgdata) {
            return Err(Error::invalid(format!(
                "tablespace {oid} cannot be restored inside the data directory ({})",
                target.display()
            )));
        }
        out.push(Relocation {
            oid,
            original,
            target,
        });
    }
    if let Some((old, _)) = given
        .iter()
        .find(|(old, _)| !out.iter().any(|r| r.original == *old))
    {
        return Err(Error::invalid(format!(
            "--tablespace-map {}: the backup has no tablespace there (it has: {})",
            old.display(),
            if out.is_empty() {
                "none".to_string()
            } else {
                out.iter()
                    .map(|r| r.original.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    for r in &out {
        prepare_empty_pgdata(&r.target).map_err(|e| {
            e.with_context(
                "tablespace",
                format!("{} (was {})", r.oid, r.original.display()),
            )
        })?;
    }
    Ok(out)
}

/// Move each unpacked `pg_tblspc/<oid>` to its target, link it, rewrite `tablespace_map`.
pub fn apply(pgdata: &Path, relocations: &[Relocation]) -> Result<()> {
    if relocations.is_empty() {
        return Ok(());
    }
    let mut map = String::new();
    for r in relocations {
        let link = pgdata.join("pg_tblspc").join(&r.oid);
        let io = |e| {
            Error::io(
                format!("cannot move tablespace {} to {}", r.oid, r.target.display()),
                e,
            )
        };
        if link.is_dir() && std::fs::rename(&link, &r.target).is_err() {
            // Another file system: copy, then remove the unpacked copy.
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", link.display()))
                .arg(&r.target)
                .status()
                .map_err(io)?;
            if !status.success() {
                return Err(Error::io(
                    format!("cp -a {} {} failed", link.display(), r.target.display()),
                    std::io::Error::other(status.to_string()),
                ));
            }
            std::fs::remove_dir_all(&link).map_err(io)?;
        }
        std::os::unix::fs::symlink(&r.target, &link).map_err(io)?;
        map.push_str(&format!("{} {}\n", r.oid, r.target.display()));
    }
    std::fs::write(pgdata.join("tablespace_map"), map)
        .map_err(|e| Error::io("cannot rewrite tablespace_map", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_default_beside_the_data_directory_or_follow_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("restore");
        let map = "16385 /srv/ts one\n16390 /srv/ts2\n";
        let given = vec![(PathBuf::from("/srv/ts2"), dir.path().join("fast"))];
        let planned = plan(&pgdata, map, &given).unwrap();
        assert_eq!(planned[0].original, PathBuf::from("/srv/ts one"));
        assert_eq!(
            planned[0].target,
            dir.path().join("restore-tablespace-16385")
        );
        assert_eq!(planned[1].target, dir.path().join("fast"));
        // A map entry for a tablespace the backup lacks is a mistake, said before writing.
        let wrong = vec![(PathBuf::from("/nowhere"), dir.path().join("x"))];
        let e = plan(&pgdata, map, &wrong).unwrap_err();
        assert!(e.to_string().contains("/srv/ts one"), "{e}");
        // A non-empty target is refused.
        std::fs::write(dir.path().join("fast").join("f"), b"x").unwrap();
        assert!(plan(&pgdata, map, &given).is_err());
        assert!(parse("x /a").is_err());
    }
}
