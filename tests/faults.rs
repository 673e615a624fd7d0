//! Flaky storage: a fault-injecting TCP proxy in front of the real S3 server answers some
//! connections with 503, resets others, and cuts responses off mid-body. Runs through it must
//! either finish with exact totals or fail with a clear message, and the lake a reader sees must
//! never be mixed or half-written at any point.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use billpipe::generate::{object_name, write_focus_csv, GenerateOptions};
use common::*;

/// Starts the proxy; returns its endpoint URL and a counter of faults injected.
fn start_proxy(upstream: &str) -> (String, Arc<AtomicU64>) {
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(AtomicU64::new(0));
    let counter = faults.clone();
    std::thread::spawn(move || {
        let mut seed = 0x5eed_u64;
        for (n, client) in listener.incoming().flatten().enumerate() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // The first connections get each fault for sure; then faults at random. The client
            // pools connections, so a cut also ends a connection and brings a new roll.
            let roll = match n {
                0 => 0,
                1 => 20,
                2 | 3 => 30,
                _ => (seed >> 33) % 100,
            };
            let cut_after = 200 + (seed >> 13) % 400_000;
            let upstream = upstream.clone();
            let counter = counter.clone();
            std::thread::spawn(move || handle(client, &upstream, roll, cut_after, &counter));
        }
    });
    (format!("http://{addr}"), faults)
}

fn handle(mut client: TcpStream, upstream: &str, roll: u64, cut_after: u64, faults: &AtomicU64) {
    match roll {
        // 503 Slow Down, as S3 throttling answers.
        0..=14 => {
            faults.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 4096];
            let _ = client.read(&mut buf);
            let body = "<Error><Code>SlowDown</Code><Message>injected</Message></Error>";
            let _ = write!(
                client,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.shutdown(Shutdown::Both);
        }
        // Connection reset before any answer.
        15..=24 => {
            faults.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
        }
        // Pass through, but cut the server's answer off after some bytes (truncated bodies).
        25..=59 => {
            faults.fetch_add(1, Ordering::Relaxed);
            pipe(client, upstream, Some(cut_after));
        }
        _ => pipe(client, upstream, None),
    }
}

fn pipe(client: TcpStream, upstream: &str, cut_after: Option<u64>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match cut_after {
            Some(limit) if sent + n as u64 > limit => (limit - sent) as usize,
            _ => n,
        };
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if cut_after.is_some_and(|l| sent >= l) {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = s_read.shutdown(Shutdown::Both);
    let _ = up.join();
}

#[test]
fn runs_through_a_flaky_proxy_end_exact_or_fail_clearly() {
    let direct = s3_context();
    let src = s3_bucket(&direct, "flaky-src");
    let dst = s3_bucket(&direct, "flaky-dst");
    let work = tempfile::tempdir().unwrap();
    let mut expected = Sums::new();
    for (i, account) in ["600000000001", "600000000002", "600000000003"]
        .iter()
        .enumerate()
    {
        let name = object_name(account, "2025-12", Some(10)).unwrap();
        let path = work.path().join(&name);
        let opts = GenerateOptions {
            account: account.to_string(),
            month: "2025-12".into(),
            through_day: Some(10),
            rows_per_day: 400 + 100 * i as u64,
            seed: 17,
            bad_rows: vec![],
            restated: false,
            gaps: false,
        };
        write_focus_csv(&opts, std::fs::File::create(&path).unwrap()).unwrap();
        let t = csv_totals(&path);
        expected.insert(("2025-12".into(), account.to_string()), (t.rows, t.billed));
        let body = std::fs::read(&path).unwrap();
        direct
            .runtime
            .block_on(
                direct
                    .client
                    .put_object()
                    .bucket(&src)
                    .key(&name)
                    .body(ByteStream::from(body))
                    .send(),
            )
            .unwrap();
    }

    let (proxy, faults) = start_proxy(&s3_endpoint());
    let lake = tempfile::tempdir().unwrap();
    let mut finished = false;
    for attempt in 0..12 {
        let args = ["--endpoint", &proxy, "--region", "garage", "--path-style"];
        let (out, report) = run_job(&format!("s3://{src}"), lake.path().to_str().unwrap(), &args);
        eprintln!("attempt {attempt}: exit {}\n{}", out.code, out.stderr);
        // Whatever happened, the lake holds whole snapshots with exact totals per partition.
        for (partition, got) in local_lake_sums(lake.path()) {
            assert_eq!(
                Some(&got),
                expected.get(&partition),
                "attempt {attempt}: {partition:?}"
            );
        }
        match out.code {
            0 => {
                finished = true;
                break;
            }
            1 | 3 => {
                // A failure names what failed.
                let said = report["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_default()
                    + &out.stdout
                    + &out.stderr;
                assert!(
                    said.contains("s3://") || said.contains("S3") || said.contains("rejected"),
                    "unclear failure: {said}"
                );
            }
            other => panic!(
                "attempt {attempt}: exit {other}\n{}\n{}",
                out.stdout, out.stderr
            ),
        }
    }
    assert!(
        finished,
        "no run got through the flaky proxy in 12 attempts"
    );
    assert_eq!(local_lake_sums(lake.path()), expected);
    let injected = faults.load(Ordering::Relaxed);
    eprintln!("faults injected so far: {injected}");
    assert!(injected > 0, "the proxy injected no fault");

    // The same through the proxy into an S3 lake: uploads meet the faults too.
    let mut finished = false;
    for _ in 0..12 {
        let args = ["--endpoint", &proxy, "--region", "garage", "--path-style"];
        let (out, _) = run_job(&format!("s3://{src}"), &format!("s3://{dst}"), &args);
        if out.code == 0 {
            finished = true;
            break;
        }
        assert!(
            matches!(out.code, 1 | 3),
            "exit {}: {}",
            out.code,
            out.stderr
        );
    }
    assert!(finished, "no s3->s3 run got through");
    // The S3 lake, read directly (not through the proxy).
    let sums = s3_lake_sums(&direct, &dst, "");
    assert_eq!(sums, expected);
}
