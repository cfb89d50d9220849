//! A private PostgreSQL cluster under the data dir, for when no `DATABASE_URL` is set.
//!
//! `initdb` runs once; a start picks a free local port and `pg_ctl` starts the server.
//! PostgreSQL refuses to run as root, so as root every command runs as the `postgres`
//! system user through `runuser`.
//!
//! Several Referdesk processes share one cluster (the server, and CLI commands run beside
//! it). Only the process that started the cluster stops it, and only when no other still
//! uses it; one that found it running uses it and leaves it running. Two lock files in the
//! cluster's directory arrange this: `start.lock`, held exclusively while a process
//! starts or stops the cluster, so two never both start it; and `users.lock`, on which
//! every process using the cluster holds a shared lock for as long as it does, so the
//! starter can tell at exit whether others still need it. The kernel drops both locks of a
//! process that dies, so a killed process never leaves a lock behind.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::private_files;

pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    run_as: Option<String>,
    port: u16,
    password: String,
    stopped: bool,
    /// This process started the cluster (rather than finding it running).
    started_here: bool,
    /// The shared lock on `users.lock` held while this process uses the cluster.
    in_use: Option<File>,
}

const INSTALL_HINT: &str = "No PostgreSQL server binaries (initdb, pg_ctl) were found on PATH or under \
/usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`; macOS: \
`brew install postgresql`), or point Referdesk at an existing server with \
DATABASE_URL=postgres://user:password@host:5432/referdesk";

/// Finds the directory holding `initdb` and `pg_ctl`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    // Newest major version first.
    debian.sort_by_key(|path| {
        std::cmp::Reverse(
            path.parent()
                .and_then(|version| version.file_name())
                .and_then(|name| name.to_str())
                .and_then(|name| name.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    on_path
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

/// The group of the system user the cluster runs as, when that is not us (we are root):
/// it must be able to reach the cluster's directory inside the data dir.
pub fn server_group() -> anyhow::Result<Option<u32>> {
    if !running_as_root() {
        return Ok(None);
    }
    let output = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .context("could not run id")?;
    let gid = String::from_utf8_lossy(&output.stdout).trim().parse().ok();
    match gid {
        Some(gid) if output.status.success() => Ok(Some(gid)),
        _ => bail!("running as root, the embedded PostgreSQL needs a `postgres` system user"),
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The longest path of a Unix-domain socket (`sun_path` holds 108 bytes on Linux, 104 on
/// macOS and the BSDs, with the closing NUL).
const MAX_SOCKET_PATH: usize = 103;

/// Where the cluster's socket goes: its data directory, unless the socket's path would be
/// too long for the system — then the cluster has no socket and is reached over TCP on
/// 127.0.0.1 (PostgreSQL refuses to start when it cannot create a socket it was told to).
fn socket_dir(data_dir: &Path) -> Option<&Path> {
    let socket_file = "/.s.PGSQL.65535";
    (data_dir.as_os_str().len() + socket_file.len() <= MAX_SOCKET_PATH).then_some(data_dir)
}

/// A libpq URL for a server's Unix-domain socket in `socket_dir`: the directory goes in
/// the host part, percent-encoded (libpq reads a host starting with `/` as a socket
/// directory), and the port names the socket file (`.s.PGSQL.<port>`).
fn socket_url(socket_dir: &Path, port: u16, password: &str, database: &str) -> String {
    let dir = socket_dir.to_string_lossy();
    let host = percent_encoding::utf8_percent_encode(&dir, percent_encoding::NON_ALPHANUMERIC);
    format!("postgres://postgres:{password}@{host}:{port}/{database}")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("could not find a free local port")?;
    Ok(listener.local_addr()?.port())
}

impl EmbeddedPostgres {
    /// Initialises (first time) and starts the cluster in `dir`, or uses it when another
    /// process has started it already.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir().context(INSTALL_HINT)?;
        let run_as = running_as_root().then(|| "postgres".to_string());
        private_files::private_dir(dir, private_files::DIR_MODE)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let data_dir = std::fs::canonicalize(dir)?;
        let mut cluster = EmbeddedPostgres {
            bin_dir,
            data_dir,
            run_as,
            port: 0,
            password: String::new(),
            stopped: true,
            started_here: false,
            in_use: None,
        };
        let _starting = cluster.lock_start_stop()?;
        cluster.give_to_server_user()?;
        cluster.init_once()?;
        private_files::set_mode(&cluster.password_file(), private_files::FILE_MODE)?;
        cluster.password = std::fs::read_to_string(cluster.password_file())
            .context("could not read the embedded cluster's password file")?
            .trim()
            .to_string();
        cluster.in_use = Some(cluster.lock_in_use()?);
        cluster.port = match cluster.running_port() {
            // Another Referdesk process started it (or one that was killed, or someone by hand).
            Some(port) => port,
            None => {
                let port = free_port()?;
                cluster.pg_ctl_start(port)?;
                cluster.started_here = true;
                port
            }
        };
        cluster.stopped = false;
        Ok(cluster)
    }

    /// Whether this process started the cluster (and will stop it), rather than finding it
    /// running.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// A URL for `database` on this cluster, over its Unix-domain socket (in the data
    /// directory when its path is short enough, see [`socket_dir`]; else TCP) rather than
    /// TCP on 127.0.0.1: each query's round trip costs both processes less CPU. The server
    /// still listens on 127.0.0.1 for `psql -h 127.0.0.1`.
    pub fn url(&self, database: &str) -> String {
        match socket_dir(&self.data_dir) {
            Some(dir) => socket_url(dir, self.port, &self.password, database),
            None => format!(
                "postgres://postgres:{}@127.0.0.1:{}/{}",
                self.password, self.port, database
            ),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The exclusive lock that serialises starting and stopping, released when dropped.
    fn lock_start_stop(&self) -> anyhow::Result<File> {
        let file = self.lock_file("start.lock")?;
        file.lock()
            .context("could not lock the embedded cluster's start.lock")?;
        Ok(file)
    }

    /// A shared lock on `users.lock`: this process uses the cluster while it holds it.
    fn lock_in_use(&self) -> anyhow::Result<File> {
        let file = self.lock_file("users.lock")?;
        file.lock_shared()
            .context("could not lock the embedded cluster's users.lock")?;
        Ok(file)
    }

    fn lock_file(&self, name: &str) -> anyhow::Result<File> {
        let path = self.data_dir.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("could not open {}", path.display()))
    }

    /// Whether another process holds `users.lock` (the caller has released its own).
    fn used_by_others(&self) -> anyhow::Result<bool> {
        match self.lock_file("users.lock")?.try_lock() {
            Ok(()) => Ok(false),
            Err(std::fs::TryLockError::WouldBlock) => Ok(true),
            Err(std::fs::TryLockError::Error(error)) => Err(error.into()),
        }
    }

    fn password_file(&self) -> PathBuf {
        self.data_dir.join("superuser-password")
    }

    fn pg_data(&self) -> PathBuf {
        self.data_dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let binary = self.bin_dir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.arg("-u").arg(user).arg("--").arg(binary);
                command
            }
            None => Command::new(binary),
        }
    }

    fn give_to_server_user(&self) -> anyhow::Result<()> {
        if let Some(user) = &self.run_as {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(&self.data_dir)
                .status()
                .context("could not run chown")?;
            if !status.success() {
                bail!("could not give {} to the {user} user", self.data_dir.display());
            }
        }
        Ok(())
    }

    fn init_once(&self) -> anyhow::Result<()> {
        if self.pg_data().join("PG_VERSION").is_file() {
            return Ok(());
        }
        let password = crate::random::random_token(32);
        private_files::write_private_file(&self.password_file(), password.as_bytes())
            .context("could not write the embedded cluster's password file")?;
        // As root, initdb runs as the server user and must read the file: it becomes theirs.
        self.give_to_server_user()?;
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.pg_data())
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth=scram-sha-256",
                "--no-instructions",
            ])
            .arg(format!("--pwfile={}", self.password_file().display()))
            .output()
            .context("could not run initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// The port of a server already running on this data directory, if any.
    fn running_port(&self) -> Option<u16> {
        let status = self
            .command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.pg_data())
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
        let pid_file = std::fs::read_to_string(self.pg_data().join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn pg_ctl_start(&self, port: u16) -> anyhow::Result<()> {
        // `pg_ctl` hands these to a shell: the directory is quoted.
        let socket_dir = match socket_dir(&self.data_dir) {
            Some(dir) => format!("'{}'", dir.display().to_string().replace('\'', r"'\''")),
            None => "''".to_string(),
        };
        let options =
            format!("-p {port} -c listen_addresses=127.0.0.1 -k {socket_dir} -c max_connections=200");
        let output = self
            .command("pg_ctl")
            .arg("start")
            .arg("-w")
            .args(["-t", "60"])
            .arg("-D")
            .arg(self.pg_data())
            .arg("-l")
            .arg(self.data_dir.join("postgres.log"))
            .arg("-o")
            .arg(options)
            .output()
            .context("could not run pg_ctl")?;
        if !output.status.success() {
            bail!(
                "PostgreSQL did not start ({}); see {}",
                String::from_utf8_lossy(&output.stderr).trim(),
                self.data_dir.join("postgres.log").display()
            );
        }
        Ok(())
    }

    /// Stops using the cluster, and stops the cluster (fast shutdown: open transactions roll
    /// back, nothing committed is lost) if this process started it and no other Referdesk
    /// process still uses it; otherwise it keeps running for them.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if !self.started_here {
            self.in_use = None;
            return;
        }
        // Nobody may start using the cluster between the check and the stop.
        let stopping = self.lock_start_stop();
        self.in_use = None;
        let others = stopping.and_then(|_stopping| {
            let others = self.used_by_others()?;
            if !others {
                self.pg_ctl_stop();
            }
            Ok(others)
        });
        match others {
            Ok(true) => {
                tracing::info!("embedded PostgreSQL left running: another Referdesk process still uses it")
            }
            Ok(false) => {}
            Err(error) => tracing::warn!("embedded PostgreSQL left running: {error:#}"),
        }
    }

    fn pg_ctl_stop(&self) {
        let result = self
            .command("pg_ctl")
            .arg("stop")
            .args(["-m", "fast", "-w"])
            .arg("-D")
            .arg(self.pg_data())
            .output();
        match result {
            Ok(output) if output.status.success() => tracing::info!("embedded PostgreSQL stopped"),
            Ok(output) => tracing::warn!(
                "embedded PostgreSQL did not stop cleanly: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => tracing::warn!("could not run pg_ctl stop: {error}"),
        }
    }

    /// Starts a cluster this process stopped again, on the same port (used by outage tests).
    pub fn restart_stopped(&mut self) -> anyhow::Result<()> {
        let _starting = self.lock_start_stop()?;
        self.in_use = Some(self.lock_in_use()?);
        self.pg_ctl_start(self.port)?;
        self.started_here = true;
        self.stopped = false;
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_too_deep_for_a_socket_is_reached_over_tcp() {
        let short = Path::new("/srv/referdesk/postgres");
        assert_eq!(socket_dir(short), Some(short));
        let deep = format!("/srv/{}/postgres", "d".repeat(80));
        assert_eq!(socket_dir(Path::new(&deep)), None);
    }

    #[test]
    fn socket_urls_encode_the_directory_as_the_host() {
        let url = socket_url(Path::new("/srv/refer desk/pg"), 54321, "secret", "referdesk");
        assert_eq!(
            url,
            "postgres://postgres:secret@%2Fsrv%2Frefer%20desk%2Fpg:54321/referdesk"
        );
        // Another database on the same server keeps the socket.
        assert_eq!(
            crate::db::url_with_database(&url, "postgres"),
            "postgres://postgres:secret@%2Fsrv%2Frefer%20desk%2Fpg:54321/postgres"
        );
    }
}
