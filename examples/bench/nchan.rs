//! Nchan, the yardstick of issue 11's fan-out target: nginx with the Nchan module in a
//! directory of its own on a free loopback port, a foreground child the benchmark starts
//! and stops (`nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`), never the system service.
//! `scripts/bench` installs Debian's `nginx` and `libnginx-mod-nchan` when missing.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use tokio::process::{Child, Command};

use crate::{
    Ctx, Res,
    clock::log,
    procfs::children,
    server::{free_port, log_file, terminate, wait_until_up},
};

/// Where nginx and the Nchan module are, how many workers to run, or why Nchan cannot run
/// here (`scripts/bench` passes what its install step found).
#[derive(Clone, Debug)]
pub struct NchanSetup {
    pub nginx: PathBuf,
    pub module: PathBuf,
    /// nginx's `worker_processes`: `auto` is one per core, as many as boardcast's actix
    /// workers (one per physical core by default), so both servers may use every core.
    pub workers: String,
    pub unavailable: Option<String>,
}

impl NchanSetup {
    /// Why the Nchan job cannot run, or None when it can.
    pub fn missing(&self) -> Option<String> {
        if let Some(why) = &self.unavailable {
            return Some(why.clone());
        }
        let install = "scripts/bench installs Debian's nginx and libnginx-mod-nchan";
        if !self.nginx.is_file() {
            return Some(format!("no nginx at {} ({install})", self.nginx.display()));
        }
        if !self.module.is_file() {
            return Some(format!(
                "no Nchan module at {} ({install})",
                self.module.display()
            ));
        }
        None
    }
}

/// A running nginx + Nchan: a publisher location and an EventSource subscriber location,
/// one channel per board id.
pub struct Nchan {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    base: String,
    dir: PathBuf,
    log: PathBuf,
    http: reqwest::Client,
    stopped: bool,
}

/// The whole nginx configuration. Paths nginx would otherwise take from its build
/// (`/var/lib/nginx/*`, `/run/nginx.pid`) point into `dir`, so the run needs nothing of
/// the system's nginx but its binary and the module.
fn config(setup: &NchanSetup, dir: &std::path::Path, port: u16, files: u64) -> String {
    let dir = dir.display();
    let module = setup.module.display();
    let workers = &setup.workers;
    format!(
        r#"load_module {module};
worker_processes {workers};
# Each subscriber is a socket in one worker; the bench raises its own limit for 15,000.
worker_rlimit_nofile {files};
# Into the log file the bench gives nginx's stderr (target/bench-logs/<job>.log).
error_log stderr warn;
pid {dir}/nginx.pid;
events {{
    worker_connections {files};
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        # reuseport: one listening socket per worker, so the kernel spreads the
        # subscribers over the workers as actix's acceptor spreads ours.
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location ~ ^/pub/([0-9a-zA-Z-]+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
        }}
        location ~ ^/sub/([0-9a-zA-Z-]+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            # The event name boardcast gives a note event, so the frames match.
            nchan_eventsource_event note.created;
        }}
    }}
}}
"#
    )
}

/// The soft open-file limit of this process (nginx's workers get the same).
fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

impl Nchan {
    pub async fn start(ctx: &Ctx, setup: &NchanSetup, label: &str) -> Res<Nchan> {
        let dir =
            std::env::temp_dir().join(format!("boardcast-bench-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(setup, &dir, port, open_file_limit()))?;
        let log = ctx.log_dir.join(format!("{label}.log"));
        let _ = std::fs::remove_file(&log);
        let child = Command::new(&setup.nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            // Not kill_on_drop: a master killed alone leaves its workers running (they do
            // not watch it); Drop asks the master to stop them instead.
            .spawn()?;
        let pid = child.id().ok_or("nginx exited at once")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut nchan = Nchan {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            base: format!("http://127.0.0.1:{port}"),
            dir,
            log,
            http,
            stopped: false,
        };
        // Any answer means it listens (a GET of a channel nobody published to is 404).
        let url = format!("{}/pub/probe", nchan.base);
        wait_until_up(&mut nchan.child, &nchan.http, &url, |_| true, &nchan.log).await?;
        Ok(nchan)
    }

    /// The request an EventSource sends for a channel.
    pub fn sub_request(&self, channel: &str) -> Vec<u8> {
        format!("GET /sub/{channel} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .into_bytes()
    }

    /// POSTs one message to a channel; returns the status (201 or 202 when published).
    pub async fn publish(&self, channel: &str, body: String) -> Res<u16> {
        let r = self
            .http
            .post(format!("{}/pub/{channel}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        // Read the body so the connection goes back to the pool.
        let _ = r.bytes().await;
        Ok(status)
    }

    /// Warning and error lines nginx wrote.
    fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("[warn]") || l.contains("[error]") || l.contains("[crit]"))
            .count()
    }

    /// SIGTERM (nginx's fast shutdown: the master stops its workers), up to 15 s, then
    /// SIGKILL; then the directory goes.
    pub async fn stop(mut self) {
        match terminate(&mut self.child, self.pid).await {
            Some((status, took)) => log(format!(
                "nginx {} stopped: {status} after {took:.1} s; {} warning/error lines",
                self.pid,
                self.warnings()
            )),
            None => {
                log(format!(
                    "nginx {} did not stop in 15 s; killing it and its workers",
                    self.pid
                ));
                let workers = children(self.pid);
                let _ = self.child.kill().await;
                for worker in workers {
                    let _ = Command::new("kill")
                        .args(["-KILL", &worker.to_string()])
                        .status()
                        .await;
                }
            }
        }
        self.stopped = true;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Nchan {
    /// A job that ends without `stop` (nginx failing to start, a panic) still takes nginx
    /// down: SIGTERM makes the master stop its workers, which SIGKILL of the master alone
    /// would leave running. The directory goes too.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        // try_wait: a master that already exited (and was reaped) is left alone, so the
        // signal cannot reach a process that reused its pid.
        if !self.stopped && matches!(self.child.try_wait(), Ok(None)) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
        }
    }
}
