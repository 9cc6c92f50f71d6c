//! Open files and connections: the real binary under a low open-file limit, flooded
//! with idle connections, still answers probes and authenticated requests.

use crate::common::daemon::{Daemon, BIN};
use scimsync::app::INITIAL_TOKEN_FILE;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `scimsync serve` started through `sh -c 'ulimit …; exec scimsync serve'`.
fn serve_with_ulimit(dir: &Path, ulimit: &str) -> Daemon {
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("SCIMSYNC_LISTEN", "127.0.0.1:0").args([
        "-c",
        &format!("ulimit {ulimit} && exec \"$0\" serve"),
        BIN,
    ]);
    Daemon::start(cmd)
}

async fn metrics(client: &reqwest::Client, daemon: &Daemon) -> String {
    client
        .get(daemon.url("/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics body")
}

fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn with_1024_open_files_1200_idle_connections_do_not_lock_out_probes_or_the_idp() {
    // The flood's 1,200 sockets are files of this process too.
    rlimit::increase_nofile_limit(4096).expect("test's own open-file limit");
    let dir = tempfile::tempdir().expect("temporary directory");
    // Soft and hard both 1,024: the daemon cannot raise it and must live within it.
    let daemon = serve_with_ulimit(dir.path(), "-n 1024");
    let token = std::fs::read_to_string(dir.path().join(INITIAL_TOKEN_FILE))
        .expect("initial token")
        .trim()
        .to_owned();
    let addr: SocketAddr = daemon.addr.parse().expect("address");

    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..1200 {
        // The daemon may already have closed older ones; the socket stays ours.
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            idle.push(stream);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "opening the flood is taking too long"
        );
    }
    assert!(idle.len() >= 1000, "only {} connections opened", idle.len());

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    for round in 0..3 {
        // New connections each time, as a prober or a fresh IdP worker would open.
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let probe = Instant::now();
        let health = fresh.get(daemon.url("/healthz")).send().await;
        assert!(
            health.as_ref().is_ok_and(|r| r.status() == 200),
            "round {round}: /healthz {health:?}\n{}",
            daemon.log()
        );
        let scim = fresh
            .get(daemon.url("/scim/v2/Users?count=1"))
            .bearer_auth(&token)
            .send()
            .await;
        assert!(
            scim.as_ref().is_ok_and(|r| r.status() == 200),
            "round {round}: SCIM {scim:?}\n{}",
            daemon.log()
        );
        assert!(
            probe.elapsed() < Duration::from_secs(5),
            "{:?}",
            probe.elapsed()
        );
        // More idle connections between rounds keep the daemon at its cap.
        for _ in 0..100 {
            if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                idle.push(stream);
            }
        }
    }

    let text = metrics(&client, &daemon).await;
    assert_eq!(sample(&text, "process_max_fds"), 1024.0, "{text}");
    assert!(
        sample(
            &text,
            "scimsync_connections_shed_total{reason=\"no_request\"}"
        ) > 0.0,
        "idle connections were shed: {text}"
    );
    assert!(
        sample(&text, "scimsync_connections_open") < 1024.0 - 128.0,
        "{text}"
    );
    drop(idle);
}

#[tokio::test]
async fn a_low_soft_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let hard = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((_, hard)) if hard > 1024 => hard,
        // Nothing to raise to on this host.
        _ => return,
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let daemon = serve_with_ulimit(dir.path(), "-Sn 1024");
    let client = reqwest::Client::new();
    let text = metrics(&client, &daemon).await;
    let max_fds = sample(&text, "process_max_fds");
    assert!(max_fds > 1024.0, "{text}");
    if let Ok(hard) = u32::try_from(hard) {
        assert_eq!(max_fds, f64::from(hard));
    }
}
