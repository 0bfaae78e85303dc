//! The server process: starting a `transcribe-server` on a free loopback port, waiting
//! for health, sampling its resident memory and CPU time from `/proc`, noticing when it
//! exits on its own, and stopping it with SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `USER_HZ`: clock ticks per second in `/proc/PID/stat` (fixed at 100 by the kernel ABI;
/// `sysconf(_SC_CLK_TCK)`).
const USER_HZ: f64 = 100.0;

/// How long a started server gets to load its model and report SERVING.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the server gets to drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS:")
}

/// The value of `field` (e.g. `VmRSS:`) in KiB from `/proc/PID/status` text.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU seconds (user + system) process `pid` has used (`/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

/// utime + stime in seconds from `/proc/PID/stat` text.
pub fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / USER_HZ)
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A free port on 127.0.0.1 (bound and released; another process could take it first,
/// which the start then reports).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A `transcribe-server` this tool started.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Spawned {
    /// Starts `binary --listen 127.0.0.1:PORT --model MODEL EXTRA...` with its output to
    /// `log` (or discarded).
    ///
    /// # Errors
    /// When the binary cannot be started.
    pub fn start(binary: &Path, model: &str, extra: &[String], log: Option<&Path>) -> Result<Self> {
        let port = free_port()?;
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(binary)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--model")
            .arg(model)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM (through `kill(1)`: this crate has no unsafe code) and waits up to
    /// [`STOP_TIMEOUT`] for it to drain and exit, then kills it. Returns its exit status.
    ///
    /// # Errors
    /// When waiting fails.
    pub async fn stop(mut self) -> Result<Option<std::process::ExitStatus>> {
        if let Some(status) = self.exited() {
            return Ok(Some(status));
        }
        let pid = self.child.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok(Some(status));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.child.kill().context("killing the server")?;
        Ok(self.child.wait().ok())
    }
}

/// Whether the server at `url` reports SERVING for the overall service.
pub async fn serving(url: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Channel::from_shared(url.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// Waits until the server at `url` is SERVING; `exited` is polled to give up early when a
/// started server dies while loading.
///
/// # Errors
/// When [`READY_TIMEOUT`] passes or the server exits first.
pub async fn wait_ready(url: &str, mut exited: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if serving(url).await {
            return Ok(());
        }
        if exited() {
            bail!("the server exited before it was ready");
        }
        if Instant::now() > deadline {
            bail!(
                "the server at {url} was not SERVING within {} s",
                READY_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let status = "Name:\ttranscribe-serv\nVmPeak:\t  900000 kB\nVmRSS:\t  123456 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(123_456));
        assert_eq!(parse_status_kib(status, "VmHWM:"), None);
        // pid (comm with ) and spaces) state ppid ... utime=250 stime=50 at fields 14, 15.
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(cpu_seconds(me).is_some());
    }
}
