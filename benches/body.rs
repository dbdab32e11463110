//! Body parsing (issue 18): `body::parse_json`, which tracks the JSON path
//! of a failure with `serde_path_to_error`, against plain
//! `serde_json::from_slice` (the baseline, what the send path did before),
//! on a typical single send body and a 100-message batch. Rounds alternate
//! between the two so load on the shared machine hits both alike. No
//! database is used; the cluster of `deploy/dev bench` only gates the run.
//!
//! Run: `deploy/dev bench body`.

mod common;

use std::hint::black_box;

use common::{print_figure, BenchEnv, Samples, Unit};
use postline::emails::input::{BatchRequest, SendRequest};
use serde_json::json;

fn main() {
    let Some(env) = BenchEnv::from_env("body") else {
        return;
    };
    env.print_header();
    let one = json!({
        "from": "Acme <hello@acme.example>",
        "to": ["a@example.com", "b@example.com"],
        "subject": "Your receipt #12345",
        "text": "Thanks for your order. ".repeat(8),
        "html": "<p>Thanks for your order.</p>".repeat(8),
        "tags": {"kind": "receipt", "shop": "eu"},
        "headers": {"X-Campaign": "spring"}
    });
    let single = serde_json::to_vec(&one).unwrap();
    let batch = serde_json::to_vec(&json!({"emails": vec![one; 100]})).unwrap();
    let rounds = env.iters(20, 2);
    let per_round_single = env.iters(2_000, 10);
    let per_round_batch = env.iters(40, 2);
    print_figure(
        "bodies",
        format!("single {} bytes, batch {} bytes", single.len(), batch.len()),
    );
    let (mut s_new, mut s_base, mut b_new, mut b_base) = (
        Samples::with_capacity(rounds * per_round_single),
        Samples::with_capacity(rounds * per_round_single),
        Samples::with_capacity(rounds * per_round_batch),
        Samples::with_capacity(rounds * per_round_batch),
    );
    for _ in 0..rounds {
        for _ in 0..per_round_single {
            s_new.time(|| black_box(postline::body::parse_json::<SendRequest>(&single).unwrap()));
            s_base.time(|| black_box(serde_json::from_slice::<SendRequest>(&single).unwrap()));
        }
        for _ in 0..per_round_batch {
            b_new.time(|| black_box(postline::body::parse_json::<BatchRequest>(&batch).unwrap()));
            b_base.time(|| black_box(serde_json::from_slice::<BatchRequest>(&batch).unwrap()));
        }
    }
    let (sn, sb, bn, bb) = (
        s_new.summary(),
        s_base.summary(),
        b_new.summary(),
        b_base.summary(),
    );
    sn.print("single: parse_json", Unit::Micros);
    sb.print("single: from_slice (baseline)", Unit::Micros);
    print_figure(
        "single: ratio (mean)",
        format!("{:.2}x", sn.mean.as_secs_f64() / sb.mean.as_secs_f64()),
    );
    bn.print("batch 100: parse_json", Unit::Micros);
    bb.print("batch 100: from_slice (baseline)", Unit::Micros);
    print_figure(
        "batch 100: ratio (mean)",
        format!("{:.2}x", bn.mean.as_secs_f64() / bb.mean.as_secs_f64()),
    );
}
