//! Two gloo ranks on 127.0.0.1: this test binary starts itself twice as the ranks (the
//! `MVD_TEST_RANK` variable says which), each under a timeout, and checks what they computed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mvdrive_dist::{Backend, Launch, ProcessGroup, Store, BUCKET_BYTES};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Starts `test` of this binary as ranks 0..world with `extra` variables; returns their
/// exit statuses and stderr, killing any rank still running after `limit`.
fn ranks(
    test: &str,
    world: usize,
    extra: &[(&str, String)],
    limit: Duration,
) -> Vec<(bool, String)> {
    let port = free_port().to_string();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..world)
        .map(|r| {
            let mut c = Command::new(&exe);
            c.args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env("MVD_TEST_RANK", r.to_string())
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("GLOO_SOCKET_IFNAME", "lo")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            for (k, v) in extra {
                c.env(k, v);
            }
            c.spawn().unwrap()
        })
        .collect();
    let start = Instant::now();
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if start.elapsed() > limit {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("{test}: the ranks did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

fn group() -> Option<ProcessGroup> {
    std::env::var("MVD_TEST_RANK").ok()?;
    let pg = ProcessGroup::from_env(Backend::Gloo, Duration::from_secs(30)).unwrap();
    Some(pg.expect("a 2-rank launch"))
}

#[test]
fn collectives_agree_across_two_ranks() {
    let Some(pg) = group() else {
        for (ok, err) in ranks(
            "collectives_agree_across_two_ranks",
            2,
            &[],
            Duration::from_secs(60),
        ) {
            assert!(ok, "a rank failed:\n{err}");
        }
        return;
    };
    let r = pg.rank() as f64;
    // Mean over ranks, across two kinds and a bucket boundary.
    let big = (BUCKET_BYTES / 4 + 10) as i64;
    let ts = vec![
        Tensor::full([3], r, (Kind::Float, tch::Device::Cpu)),
        Tensor::full([2, 2], 2.0 * r, (Kind::Double, tch::Device::Cpu)),
        Tensor::new(),
        Tensor::full([big], r + 1.0, (Kind::Float, tch::Device::Cpu)),
        Tensor::full([5], 10.0 * r, (Kind::Float, tch::Device::Cpu)).narrow(0, 1, 3),
    ];
    pg.all_reduce_mean_(&ts).unwrap();
    assert_eq!(Vec::<f32>::try_from(&ts[0]).unwrap(), vec![0.5; 3]);
    assert_eq!(
        Vec::<f64>::try_from(ts[1].flatten(0, -1)).unwrap(),
        vec![1.0; 4]
    );
    assert!(!ts[2].defined());
    assert_eq!(ts[3].mean(Kind::Double).double_value(&[]), 1.5);
    assert_eq!(Vec::<f32>::try_from(&ts[4]).unwrap(), vec![5.0; 3]);
    let m = vec![Tensor::from_slice(&[r, -r])];
    pg.all_reduce_max_(&m).unwrap();
    assert_eq!(Vec::<f64>::try_from(&m[0]).unwrap(), vec![1.0, 0.0]);
    let b = vec![Tensor::full([4], r + 7.0, (Kind::Float, tch::Device::Cpu))];
    pg.broadcast_(&b, 0).unwrap();
    assert_eq!(Vec::<f32>::try_from(&b[0]).unwrap(), vec![7.0; 4]);
    let text = if pg.rank() == 0 {
        b"rank zero says".to_vec()
    } else {
        Vec::new()
    };
    assert_eq!(pg.broadcast_bytes(&text, 0).unwrap(), b"rank zero says");
    pg.barrier().unwrap();
}

#[test]
fn ranks_join_the_store_their_launcher_serves() {
    let Some(pg) = group() else {
        // As `train fit --nproc` does: this process serves the store on a port the kernel
        // picks, and every rank, rank 0 too, joins it as a client.
        let store = Store::serve(0, Duration::from_secs(60)).unwrap();
        assert_ne!(store.port(), 0);
        let taken = Store::serve(store.port(), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            taken.contains(&format!("port {}", store.port())) && taken.contains("MASTER_PORT"),
            "a second store on a taken port: {taken}"
        );
        let extra = [
            ("MASTER_PORT", store.port().to_string()),
            ("TORCHELASTIC_USE_AGENT_STORE", "True".to_string()),
        ];
        let test = "ranks_join_the_store_their_launcher_serves";
        for (ok, err) in ranks(test, 2, &extra, Duration::from_secs(60)) {
            assert!(ok, "a rank failed:\n{err}");
        }
        return;
    };
    assert!(pg.launch().agent_store);
    let t = vec![Tensor::full(
        [4],
        pg.rank() as f64 + 1.0,
        (Kind::Float, tch::Device::Cpu),
    )];
    pg.all_reduce_sum_(&t).unwrap();
    assert_eq!(Vec::<f32>::try_from(&t[0]).unwrap(), vec![3.0; 4]);
    pg.barrier().unwrap();
}

#[test]
fn a_rank_that_stops_makes_the_other_fail_not_hang() {
    let Some(pg) = group() else {
        // The store outlives both ranks here, as torchrun's agent store does.
        let store = Store::serve(0, Duration::from_secs(60)).unwrap();
        let extra = [
            ("MASTER_PORT", store.port().to_string()),
            ("TORCHELASTIC_USE_AGENT_STORE", "True".to_string()),
        ];
        let out = ranks(
            "a_rank_that_stops_makes_the_other_fail_not_hang",
            2,
            &extra,
            Duration::from_secs(60),
        );
        assert!(!out[0].0, "rank 0 should fail once rank 1 is gone");
        assert!(
            out[0].1.contains("all-reduce across 2 ranks failed"),
            "rank 0's error: {}",
            out[0].1
        );
        return;
    };
    let t = vec![Tensor::ones([8], (Kind::Float, tch::Device::Cpu))];
    pg.all_reduce_sum_(&t).unwrap();
    if pg.rank() == 1 {
        std::process::exit(0); // gone without a word, like a killed rank
    }
    std::thread::sleep(Duration::from_millis(500));
    if let Err(e) = pg.all_reduce_sum_(&t) {
        eprintln!("{e}");
        std::process::exit(3);
    }
}

#[test]
fn an_unreachable_master_is_named_after_the_timeout() {
    // RFC 5737 TEST-NET: never routed; the rendezvous must give up and name it.
    let launch = Launch {
        rank: 1,
        world: 2,
        local_rank: 1,
        master_addr: "192.0.2.1".into(),
        master_port: free_port(),
        launcher: mvdrive_dist::Launcher::Torchrun,
        agent_store: false,
        attempt: 0,
    };
    let start = Instant::now();
    let e = ProcessGroup::connect(&launch, Backend::Gloo, Duration::from_secs(3))
        .unwrap_err()
        .to_string();
    eprintln!("{e}");
    assert!(e.contains("192.0.2.1"), "{e}");
    assert!(e.contains("could not join"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
}
