//! Third-party tools for the interop tests: finding them (a loud SKIPPED line when one is
//! missing, a failure instead when `STARLING_REQUIRE_INTEROP=1`), the `starling` binary as a
//! child process, client tools whose output is collected line by line, and the Paho Python
//! checks in `tests/interop/paho_check.py`.
//!
//! Every child process sits in a guard that kills it when the test ends, also when it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long anything that should happen may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A whole Paho scenario; the script's own watchdog is 60 s.
pub const PAHO_WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Which tools are here
// ---------------------------------------------------------------------------------------------

pub fn interop_required() -> bool {
    std::env::var("STARLING_REQUIRE_INTEROP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether a test may go on. When its tool is missing: fails if interop is required, otherwise
/// prints a SKIPPED line straight to stderr (past the test harness's output capture, so it shows
/// for a passing test) and returns false.
pub fn tool_available(found: bool, missing: &str, install: &str) -> bool {
    if found {
        return true;
    }
    if interop_required() {
        panic!("{missing}; {install} (STARLING_REQUIRE_INTEROP is set, so this is a failure)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {missing}; {install} or set STARLING_REQUIRE_INTEROP=1 to make this a \
         failure ***\n"
    );
    false
}

pub fn on_path(program: &str) -> bool {
    find_program(program, &[]).is_some()
}

/// Where `program` is: on PATH, or else in one of `extra` directories (daemons live in sbin,
/// which a user's PATH may lack).
pub fn find_program(program: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

pub fn mosquitto_available() -> bool {
    tool_available(
        on_path("mosquitto_pub") && on_path("mosquitto_sub"),
        "mosquitto_pub not found",
        "install mosquitto-clients",
    )
}

/// Chromium's flags for a quiet headless run in a container: no sandbox, GPU, QUIC, first-run
/// pages or background traffic, and no /dev/shm (small in containers).
pub const CHROMIUM_HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// The Chromium binary, if there is one. `STARLING_REQUIRE_CHROMIUM=1` (or
/// `STARLING_REQUIRE_INTEROP=1`) makes a missing one a failure.
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|program| on_path(program));
    let required =
        std::env::var("STARLING_REQUIRE_CHROMIUM").is_ok_and(|v| !v.is_empty() && v != "0");
    if found.is_none() && required {
        panic!(
            "chromium not found; install it (apt-get install chromium); STARLING_REQUIRE_CHROMIUM is set"
        );
    }
    tool_available(
        found.is_some(),
        "chromium not found",
        "install it with `apt-get install chromium`",
    )
    .then_some(found)
    .flatten()
}

pub fn paho_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new("python3")
            .args([
                "-c",
                "import paho.mqtt.client as m; m.CallbackAPIVersion.VERSION2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    tool_available(
        found,
        "python3 with paho-mqtt 2.x not found",
        "install it with `python3 -m pip install 'paho-mqtt>=2,<3'`",
    )
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// Sends every line `reader` produces to `lines`, also appending it to `log` if given.
pub fn forward_lines(
    reader: impl Read + Send + 'static,
    lines: Option<Sender<String>>,
    log: Option<Arc<Mutex<Vec<String>>>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if let Some(log) = &log {
                log.lock().expect("log lock").push(line.clone());
            }
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    });
}

/// The broker binary, killed when dropped; a failing test prints what it logged.
pub struct BrokerProcess {
    child: Child,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address, in the order of the configuration.
    pub addrs: Vec<SocketAddr>,
    /// Everything it printed, shown when a test fails.
    log: Arc<Mutex<Vec<String>>>,
}

impl BrokerProcess {
    /// One plain MQTT listener on a free port, logging at `info`.
    pub fn start() -> BrokerProcess {
        BrokerProcess::start_with(&["-l", "127.0.0.1:0"], 1)
    }

    /// Starts `starling` with `args` (logging at `info`) and waits for the addresses of its
    /// `listeners` listeners.
    pub fn start_with(args: &[&str], listeners: usize) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .args(args)
            .args(["--log-level", "info"])
            .env_remove("STARLING_CONFIG")
            .env_remove("STARLING_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the starling binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        forward_lines(
            child.stdout.take().expect("stdout"),
            Some(tx),
            Some(log.clone()),
        );
        forward_lines(
            child.stderr.take().expect("stderr"),
            None,
            Some(log.clone()),
        );
        let mut broker = BrokerProcess {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            addrs: Vec::new(),
            log,
        };
        let deadline = Instant::now() + WAIT;
        while broker.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => broker.addrs.extend(listening_addr(&line)),
                Err(_) => panic!("starling printed no address within {WAIT:?}"),
            }
        }
        broker.addr = broker.addrs[0];
        broker
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after [`BrokerProcess::signal`]).
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for starling")
    }

    /// Sends `signal` (a name `kill` knows, such as `HUP`) to the broker.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits until the broker has logged a line for which `want` holds; returns it.
    pub fn wait_for_log(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log.lock().expect("log lock").iter().find(|l| want(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the broker logged no {what} within {WAIT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many lines logged so far satisfy `want`.
    pub fn count_log(&self, want: impl Fn(&str) -> bool) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| want(l))
            .count()
    }
}

/// The address in `starling <version> listening on <addr>`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("starling ")?;
    let (_version, addr) = rest.split_once(" listening on ")?;
    addr.trim().parse().ok()
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self
                .log
                .lock()
                .map(|log| log.join("\n"))
                .unwrap_or_default();
            eprintln!("--- starling output ---\n{log}\n--- end of starling output ---");
        }
    }
}

/// The real mosquitto broker run with a config file, killed when dropped; `None` (after a
/// SKIPPED line, or a failure when interop is required) when it is not installed.
pub struct Mosquitto {
    child: Child,
}

impl Mosquitto {
    /// Starts `mosquitto -c conf` and waits until `addr` accepts connections.
    pub fn start(conf: &Path, addr: SocketAddr) -> Option<Mosquitto> {
        let Some(program) = find_program("mosquitto", &["/usr/sbin", "/usr/local/sbin"]) else {
            tool_available(false, "the mosquitto broker not found", "install mosquitto");
            return None;
        };
        let child = Command::new(program)
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let mut broker = Mosquitto { child };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("mosquitto -c {} exited: {status}", conf.display());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Some(broker)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Started as root, mosquitto drops to user `mosquitto`, which cannot read a test's owner-only
/// files: a config for it then needs `user root`.
#[cfg(unix)]
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(not(unix))]
pub fn running_as_root() -> bool {
    false
}

/// A free loopback port (bound and released), for configs that must name one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A client tool, its stdout and stderr lines collected as they come; killed when dropped.
pub struct Tool {
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Tool {
    pub fn spawn(program: &str, args: &[String], stdin: Option<&str>) -> Tool {
        let mut child = Command::new(program)
            .args(args)
            // mosquitto_pub/sub read default options from $XDG_CONFIG_HOME (or ~/.config): none
            // of a developer's settings may leak into a test.
            .env("XDG_CONFIG_HOME", "/nonexistent/starling-interop")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        let (tx, rx) = mpsc::channel();
        forward_lines(child.stdout.take().expect("stdout"), Some(tx.clone()), None);
        forward_lines(child.stderr.take().expect("stderr"), Some(tx), None);
        Tool {
            name: format!("{program} {}", args.join(" ")),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line for which `want` holds.
    pub fn wait_for_line(&mut self, what: &str, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = want(&line);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {what} from `{}` within {WAIT:?}; it printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "`{}` ended before {what}; it printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits up to `wait` for the tool to exit and returns its status and every line it printed.
    pub fn finish_within(&mut self, wait: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + wait;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                self.collect_rest();
                panic!(
                    "`{}` still running after {wait:?}; it printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.collect_rest();
        (status, self.seen.clone())
    }

    pub fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        self.finish_within(WAIT)
    }

    /// SIGKILL, then every line it printed.
    pub fn kill(&mut self) -> Vec<String> {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        self.collect_rest();
        self.seen.clone()
    }

    /// Takes the lines still in flight; the readers stop when the pipes close.
    fn collect_rest(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            self.seen.push(line);
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A client id, short enough for MQTT 3.1 (23 characters).
pub fn client_id(role: &str) -> String {
    format!("{role}{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Runs one scenario of `tests/interop/paho_check.py` against `port` (`extra` adds options such
/// as `--transport websockets`); it exits 0 only when everything it received matched what it
/// sent.
pub fn paho_scenario(port: u16, scenario: &str, extra: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/paho_check.py");
    let mut args = strings(&[script, "--host", "127.0.0.1", "--port", &port.to_string()]);
    args.extend(strings(extra));
    args.push(scenario.to_owned());
    let mut check = Tool::spawn("python3", &args, None);
    let (status, lines) = check.finish_within(PAHO_WAIT);
    assert!(
        status.success(),
        "paho_check.py {} failed ({status}):\n{}",
        args.join(" "),
        lines.join("\n")
    );
    assert!(
        lines.contains(&format!("OK {scenario}")),
        "paho_check.py {scenario} did not report OK:\n{}",
        lines.join("\n")
    );
}
