//! Preparing a cluster before its postmaster starts: finding the server binaries, choosing the
//! user that runs them, and initdb.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{Gid, Uid, User};

use super::{EmbeddedError, Profile, SUPERUSER, io_error, os_error};

/// An absolute path for the cluster with every existing component resolved, so that it can be
/// compared with `/proc/<pid>/cwd` and is stable in the socket path.
pub(super) fn resolve_dir(dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let context = || format!("cannot resolve the Postgres directory {}", dir.display());
    let absolute = std::path::absolute(dir).map_err(io_error(context()))?;
    if absolute.exists() {
        return fs::canonicalize(&absolute).map_err(io_error(context()));
    }
    let invalid = || EmbeddedError::Io {
        context: context(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a directory name"),
    };
    let parent = absolute.parent().ok_or_else(invalid)?;
    let name = absolute.file_name().ok_or_else(invalid)?;
    fs::create_dir_all(parent).map_err(io_error(format!("cannot create {}", parent.display())))?;
    Ok(fs::canonicalize(parent)
        .map_err(io_error(context()))?
        .join(name))
}

/// The major version recorded in `dir/PG_VERSION`, `None` when the cluster is not initialised.
pub(super) fn read_cluster_version(dir: &Path) -> Result<Option<String>, EmbeddedError> {
    let path = dir.join("PG_VERSION");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format!("cannot read {}", path.display()))(e)),
    }
}

pub(super) struct Binaries {
    pub(super) initdb: PathBuf,
    pub(super) postgres: PathBuf,
    pub(super) version: String,
}

/// Directories that may hold `initdb` and `postgres`, in order of preference: PATH, then
/// Debian's versioned directories (newest first; they are not on PATH there), then the
/// default prefix of a source build.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = name.split('.').map(|n| n.parse().unwrap_or(0)).collect();
            (key, entry.path().join("bin"))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first installation that can run the cluster in `dir`: any for a new cluster, otherwise
/// one of the cluster's major version (a newer server cannot open an older cluster).
pub(super) async fn find_binaries(
    dir: &Path,
    cluster_version: Option<&str>,
) -> Result<Binaries, EmbeddedError> {
    find_binaries_in(candidate_dirs(), dir, cluster_version).await
}

async fn find_binaries_in(
    candidates: Vec<PathBuf>,
    dir: &Path,
    cluster_version: Option<&str>,
) -> Result<Binaries, EmbeddedError> {
    let mut other_versions: Vec<String> = Vec::new();
    for bin in candidates {
        let initdb = bin.join("initdb");
        let postgres = bin.join("postgres");
        if !is_executable(&initdb) || !is_executable(&postgres) {
            continue;
        }
        let Some(version) = server_version(&postgres).await else {
            continue;
        };
        match cluster_version {
            Some(wanted) if wanted != version => {
                if !other_versions.contains(&version) {
                    other_versions.push(version);
                }
            }
            _ => {
                return Ok(Binaries {
                    initdb,
                    postgres,
                    version,
                });
            }
        }
    }
    match cluster_version {
        Some(cluster) if !other_versions.is_empty() => Err(EmbeddedError::VersionMismatch {
            dir: dir.to_path_buf(),
            cluster: cluster.to_string(),
            found: other_versions.join(", "),
        }),
        _ => Err(EmbeddedError::BinariesNotFound),
    }
}

/// The major version of a `postgres` binary, spelled as in PG_VERSION.
async fn server_version(postgres: &Path) -> Option<String> {
    let output = tokio::process::Command::new(postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    major_version(&String::from_utf8_lossy(&output.stdout))
}

/// `postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)` → `15`; `... 9.6.24` → `9.6`;
/// `... 18beta1` → `18`.
fn major_version(version_output: &str) -> Option<String> {
    let version = version_output
        .split_once("(PostgreSQL)")?
        .1
        .split_whitespace()
        .next()?;
    let mut parts = version.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    if major >= 10 {
        Some(major.to_string())
    } else {
        Some(format!("{major}.{}", parts.next()??))
    }
}

/// The unprivileged user that runs Postgres when Trellis runs as root.
pub(super) struct RunAs {
    pub(super) name: String,
    pub(super) uid: Uid,
    pub(super) gid: Gid,
}

pub(super) fn choose_run_as(dir: &Path, initialised: bool) -> Result<Option<RunAs>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    if initialised {
        // Whoever owns the cluster already must keep running it: Postgres insists on that.
        let meta =
            fs::metadata(dir).map_err(io_error(format!("cannot inspect {}", dir.display())))?;
        if meta.uid() == 0 {
            return Err(EmbeddedError::OwnedByRoot(dir.to_path_buf()));
        }
        let uid = Uid::from_raw(meta.uid());
        let user = User::from_uid(uid).ok().flatten();
        return Ok(Some(RunAs {
            name: user
                .as_ref()
                .map_or_else(|| uid.to_string(), |u| u.name.clone()),
            uid,
            gid: user.map_or(Gid::from_raw(meta.gid()), |u| u.gid),
        }));
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) =
            User::from_name(name).map_err(os_error(format!("cannot look up user {name}")))?
        {
            return Ok(Some(RunAs {
                name: user.name,
                uid: user.uid,
                gid: user.gid,
            }));
        }
    }
    Err(EmbeddedError::NoUnprivilegedUser)
}

/// Fails with a message naming the blocking directory when `user` cannot enter `path`: every
/// parent must be searchable by it, which a data directory under /root, say, is not.
pub(super) async fn check_reachable(
    postgres: &Path,
    user: &RunAs,
    path: &Path,
) -> Result<(), EmbeddedError> {
    // Entering the directory as the user is the exact test; mode bits only locate the culprit.
    let probe = tokio::process::Command::new(postgres)
        .arg("--version")
        .current_dir(path)
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match probe {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let blocker = first_unsearchable(path, user)
                .or_else(|| first_unsearchable(postgres, user))
                .unwrap_or_else(|| path.to_path_buf());
            Err(EmbeddedError::NotReachable {
                user: user.name.clone(),
                path: path.to_path_buf(),
                blocker,
            })
        }
        Err(e) => Err(io_error(format!(
            "cannot run {} as user {}",
            postgres.display(),
            user.name
        ))(e)),
    }
}

/// The outermost directory on the way to `path` that `user` may not search. Supplementary
/// groups are not considered: the spawned process runs with its primary group only.
fn first_unsearchable(path: &Path, user: &RunAs) -> Option<PathBuf> {
    let mut ancestors: Vec<&Path> = path.ancestors().collect();
    ancestors.reverse();
    ancestors.into_iter().find_map(|dir| {
        let meta = fs::metadata(dir).ok()?;
        if !meta.is_dir() {
            return None;
        }
        let mode = meta.mode();
        let searchable = if meta.uid() == user.uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        (!searchable).then(|| dir.to_path_buf())
    })
}

/// Creates the cluster. A missing directory is built under a temporary sibling name and renamed
/// into place, so an interrupted first start never leaves a half-made cluster behind; an existing
/// empty directory (a mount point, say) is initialised in place.
pub(super) async fn initdb(
    binaries: &Binaries,
    dir: &Path,
    run_as: Option<&RunAs>,
    profile: Profile,
) -> Result<(), EmbeddedError> {
    let in_place = dir.exists();
    let target = if in_place {
        let mut entries =
            fs::read_dir(dir).map_err(io_error(format!("cannot read {}", dir.display())))?;
        if entries.next().is_some() {
            return Err(EmbeddedError::NotACluster(dir.to_path_buf()));
        }
        dir.to_path_buf()
    } else {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let temp = dir.with_file_name(format!(".{name}.initdb"));
        if temp.exists() {
            fs::remove_dir_all(&temp).map_err(io_error(format!(
                "cannot remove the leftover {}",
                temp.display()
            )))?;
        }
        fs::create_dir(&temp).map_err(io_error(format!("cannot create {}", temp.display())))?;
        temp
    };
    let result = initdb_into(binaries, &target, run_as, profile).await;
    if result.is_err() && !in_place {
        let _ = fs::remove_dir_all(&target);
    }
    result?;
    if !in_place {
        fs::rename(&target, dir).map_err(io_error(format!(
            "cannot move {} to {}",
            target.display(),
            dir.display()
        )))?;
    }
    Ok(())
}

async fn initdb_into(
    binaries: &Binaries,
    target: &Path,
    run_as: Option<&RunAs>,
    profile: Profile,
) -> Result<(), EmbeddedError> {
    fs::set_permissions(target, fs::Permissions::from_mode(0o700)).map_err(io_error(format!(
        "cannot set permissions on {}",
        target.display()
    )))?;
    if let Some(user) = run_as {
        nix::unistd::chown(target, Some(user.uid), Some(user.gid)).map_err(os_error(format!(
            "cannot give {} to user {}",
            target.display(),
            user.name
        )))?;
        check_reachable(&binaries.postgres, user, target).await?;
    }
    tracing::info!(
        dir = %target.display(),
        version = %binaries.version,
        "initialising a new Postgres cluster"
    );
    let mut command = tokio::process::Command::new(&binaries.initdb);
    command
        .arg("--pgdata")
        .arg(target)
        .arg(format!("--username={SUPERUSER}"))
        // Only the owner can reach the socket directory, so the socket needs no password.
        .arg("--auth=trust")
        .arg("--encoding=UTF8")
        // Byte-order collation: deterministic, fast, and present on every system.
        .arg("--locale=C")
        .current_dir(target)
        .stdin(Stdio::null());
    if profile == Profile::Tests {
        command.arg("--no-sync");
    }
    if let Some(user) = run_as {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let output = command.output().await.map_err(io_error(format!(
        "cannot run {}",
        binaries.initdb.display()
    )))?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(EmbeddedError::Initdb {
            status: output.status,
            output: text,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions() {
        assert_eq!(
            major_version("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n").as_deref(),
            Some("15")
        );
        assert_eq!(
            major_version("postgres (PostgreSQL) 9.6.24").as_deref(),
            Some("9.6")
        );
        assert_eq!(
            major_version("postgres (PostgreSQL) 18beta1").as_deref(),
            Some("18")
        );
        assert_eq!(major_version("something else"), None);
    }

    #[tokio::test]
    async fn missing_binaries_say_what_to_install() {
        let empty = tempfile::tempdir().expect("tempdir");
        let error = find_binaries_in(vec![empty.path().to_path_buf()], empty.path(), None)
            .await
            .err()
            .expect("nothing to find");
        assert!(matches!(error, EmbeddedError::BinariesNotFound));
        assert!(error.to_string().contains("apt-get install postgresql"));
    }

    #[tokio::test]
    async fn binaries_must_match_the_cluster_version() {
        let found = find_binaries(Path::new("/nowhere"), None)
            .await
            .expect("these tests need Postgres installed");
        let error = find_binaries(Path::new("/nowhere"), Some("9.1"))
            .await
            .err()
            .expect("no Postgres 9.1 installed");
        match error {
            EmbeddedError::VersionMismatch {
                cluster,
                found: versions,
                ..
            } => {
                assert_eq!(cluster, "9.1");
                assert!(versions.contains(&found.version));
            }
            other => panic!("unexpected error: {other}"),
        }
    }
}
