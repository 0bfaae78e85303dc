//! Helpers shared by the CLI's end-to-end tests: the workspace root, a `transcribe-server`
//! process on a free loopback port, and a virtual microphone (a private PulseAudio daemon's
//! null-sink monitor read through ALSA's pulse plugin, so capture goes through real cpal with
//! no sound hardware). Each test file uses part of it.
#![allow(dead_code, unused_macros)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The virtual capture device's ALSA name.
pub const MIC: &str = "fixture_mic";

/// Model the tests' servers load.
pub const SERVER_MODEL: &str = "tiny.en";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The system ALSA config (to include before ours) and whether the pulse plugin exists.
pub fn alsa_system_config() -> Option<PathBuf> {
    let conf = ["/usr/share/alsa/alsa.conf", "/etc/alsa/alsa.conf"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let plugin = std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("alsa-lib/libasound_module_pcm_pulse.so"))
        .chain([
            PathBuf::from("/usr/lib/alsa-lib/libasound_module_pcm_pulse.so"),
            PathBuf::from("/usr/lib64/alsa-lib/libasound_module_pcm_pulse.so"),
        ])
        .any(|p| p.exists());
    plugin.then_some(conf)
}

/// A private PulseAudio daemon with a null sink, and an ALSA config naming its monitor.
pub struct VirtualMic {
    /// Its private folder (socket, runtime, ALSA config).
    pub dir: tempfile::TempDir,
    /// The PulseAudio daemon (tests kill it to simulate losing the device).
    pub daemon: Child,
    alsa_config_path: String,
}

impl VirtualMic {
    /// Starts one, or says why it cannot (the test then skips).
    pub fn start() -> Result<Self, String> {
        if !have("pulseaudio", "--version") || !have("paplay", "--version") {
            return Err("pulseaudio/paplay not installed (scripts/setup installs them)".into());
        }
        let system_conf = alsa_system_config()
            .ok_or("ALSA config or its pulse plugin (libasound2-plugins) not found")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let runtime = dir.path().join("runtime");
        std::fs::create_dir_all(&runtime).map_err(|e| e.to_string())?;
        let socket = dir.path().join("native");
        let daemon = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disable-shm=yes",
                "--log-target=stderr",
            ])
            .arg("-L")
            .arg(format!(
                "module-native-protocol-unix auth-anonymous=1 socket={}",
                socket.display()
            ))
            .args([
                "-L",
                "module-null-sink sink_name=fixture rate=48000 channels=2",
            ])
            .env("HOME", dir.path())
            .env("PULSE_RUNTIME_PATH", &runtime)
            .env("PULSE_STATE_PATH", dir.path().join("state"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("pulseaudio.log"))
                    .map_err(|e| e.to_string())?,
            ))
            .spawn()
            .map_err(|e| format!("cannot start pulseaudio: {e}"))?;
        let conf = dir.path().join("asound.conf");
        std::fs::write(
            &conf,
            format!(
                "pcm.{MIC} {{\n  type pulse\n  device \"fixture.monitor\"\n  \
                 hint {{ show on description \"Fixture microphone\" }}\n}}\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let mic = Self {
            alsa_config_path: format!("{}:{}", system_conf.display(), conf.display()),
            dir,
            daemon,
        };
        let started = Instant::now();
        while !socket.exists() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "pulseaudio did not start: {}",
                    std::fs::read_to_string(mic.dir.path().join("pulseaudio.log"))
                        .unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The sink is loaded before the socket, but give the daemon a moment to serve it.
        std::thread::sleep(Duration::from_millis(200));
        Ok(mic)
    }

    pub fn pulse_server(&self) -> String {
        format!("unix:{}", self.dir.path().join("native").display())
    }

    /// Environment a process needs to see the virtual microphone.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ALSA_CONFIG_PATH", self.alsa_config_path.clone()),
            ("PULSE_SERVER", self.pulse_server()),
        ]
    }

    /// Plays `wav` into the sink in real time; returns when it has been played.
    pub fn play(&self, wav: &Path) {
        let status = Command::new("paplay")
            .arg("-d")
            .arg("fixture")
            .arg(wav)
            .env("PULSE_SERVER", self.pulse_server())
            .env("HOME", self.dir.path())
            .status()
            .expect("paplay runs");
        assert!(status.success(), "paplay failed: {status}");
    }
}

impl Drop for VirtualMic {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

macro_rules! virtual_mic_or_skip {
    () => {
        match VirtualMic::start() {
            Ok(mic) => mic,
            Err(why) => {
                eprintln!("skipping: no virtual microphone: {why}");
                return;
            }
        }
    };
}

/// A `transcribe-server` process, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary, which sits beside ours in the same target folder (`cargo test
/// --workspace` and scripts/test build it).
pub fn server_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_transcribe")).with_file_name("transcribe-server")
}

/// Starts `transcribe-server` on a free loopback port with [`SERVER_MODEL`], `extra` flags and
/// `env`, returning once a log line contains `ready_line`.
///
/// # Panics
/// When the binary is missing or the server exits before it is ready.
pub fn start_server(extra: &[&str], env: &[(&str, String)], ready_line: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    start_server_at(&format!("127.0.0.1:{port}"), extra, env, ready_line)
}

/// [`start_server`] on `listen` (`127.0.0.1:PORT`: to restart a server where it was).
///
/// # Panics
/// As [`start_server`].
pub fn start_server_at(
    listen: &str,
    extra: &[&str],
    env: &[(&str, String)],
    ready_line: &str,
) -> Server {
    let bin = server_binary();
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (scripts/test does)",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args(["--listen", listen, "--model", SERVER_MODEL])
        .args(extra)
        .current_dir(root())
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains(ready_line));
    assert!(ready, "server exited before serving");
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        url: format!("http://{listen}"),
    }
}
