//! `make bench-dist`'s all-reduce figures: two gloo ranks on 127.0.0.1 average float32
//! gradients of several sizes in DDP-sized buckets (this example starts itself twice);
//! the peer is a memcpy of the same bytes in one process.
//!
//! `cargo run --release -p mvdrive-dist --example allreduce [MiB ...]`

use std::process::Command;
use std::time::{Duration, Instant};

use mvdrive_dist::{Backend, Launch, ProcessGroup};
use tch::{Device, Kind, Tensor};

fn sizes() -> Vec<f64> {
    let v: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if v.is_empty() {
        vec![1.0, 10.0, 120.0]
    } else {
        v
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::var("RANK").is_err() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
            .to_string();
        let exe = std::env::current_exe().expect("this binary");
        let kids: Vec<_> = (0..2)
            .map(|r| {
                Command::new(&exe)
                    .args(std::env::args().skip(1))
                    .env("RANK", r.to_string())
                    .env("WORLD_SIZE", "2")
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", &port)
                    .env("GLOO_SOCKET_IFNAME", "lo")
                    .env("OMP_NUM_THREADS", "1")
                    .spawn()
                    .expect("start a rank")
            })
            .collect();
        let ok = kids
            .into_iter()
            .all(|mut k| k.wait().is_ok_and(|s| s.success()));
        std::process::exit(if ok { 0 } else { 1 });
    }
    let launch = Launch::from_env().expect("launch").expect("2 ranks");
    let pg = ProcessGroup::connect(&launch, Backend::Gloo, Duration::from_secs(60)).expect("join");
    if pg.rank() == 0 {
        println!("| gradient bytes | tensors | all-reduce (2 gloo ranks, 127.0.0.1) | memcpy of the bytes | ratio | GB/s (algorithm) |");
        println!("| --- | --- | --- | --- | --- | --- |");
    }
    for mib in sizes() {
        // Like a model's gradients: many tensors of mixed sizes.
        let total = (mib * 1048576.0 / 4.0) as i64;
        let n = 40i64;
        let mut ts: Vec<Tensor> = (0..n)
            .map(|i| Tensor::ones([(total / n) + i], (Kind::Float, Device::Cpu)))
            .collect();
        let bytes: i64 = ts.iter().map(|t| t.numel() as i64 * 4).sum();
        let mut times = Vec::new();
        for _ in 0..7 {
            pg.barrier().expect("barrier");
            let t0 = Instant::now();
            pg.all_reduce_mean_(&ts).expect("all-reduce");
            times.push(t0.elapsed().as_secs_f64());
        }
        let src = Tensor::ones([bytes / 4], (Kind::Float, Device::Cpu));
        let mut dst = src.zeros_like();
        let mut copy = Vec::new();
        for _ in 0..7 {
            let t0 = Instant::now();
            dst.copy_(&src);
            copy.push(t0.elapsed().as_secs_f64());
        }
        let (ar, mc) = (median(times), median(copy));
        ts.iter_mut()
            .for_each(|t| assert_eq!(t.double_value(&[0]), 1.0));
        if pg.rank() == 0 {
            println!(
                "| {:.1} MiB | {} | {:.2} ms | {:.2} ms | {:.1}x | {:.2} |",
                bytes as f64 / 1048576.0,
                n,
                ar * 1e3,
                mc * 1e3,
                ar / mc,
                bytes as f64 / ar / 1e9
            );
        }
    }
    pg.barrier().expect("barrier");
}
