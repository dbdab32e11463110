//! Auth benchmark (DESIGN §9: steady-state key check ≤ 20 µs on a cache hit,
//! one argon2 verify per key per TTL). Measures, in one run and against one
//! real key: `AuthService::authenticate` on a cache hit (one task, then two
//! threads at once), one raw argon2id verify, and a cold
//! `authenticate` (DB lookup + argon2) after `invalidate_all()`.
//!
//! Run: `deploy/dev bench auth`.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{print_figure, BenchEnv, Mode, Samples, Unit};
use diesel::{Connection, PgConnection};
use postline::auth::{token, AuthService};
use postline::keys::model::find_for_auth;
use postline::keys::service::bootstrap_admin_key;

/// The production TTL (`auth.cache_ttl_secs` default).
const TTL: Duration = Duration::from_secs(5);
/// Cache-hit calls per round. Each round starts with a fresh cache fill so no
/// round can run into the TTL (a round takes well under a second).
const ROUND: usize = 50_000;
const TARGET_HIT_US: f64 = 20.0;

fn main() {
    let Some(env) = BenchEnv::from_env("auth") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(&env));
}

async fn run(env: &BenchEnv) {
    env.print_header();
    let db = env.fresh_database();
    let pool = db.pool(4);
    let auth = AuthService::new(pool.clone(), TTL);
    let key = bootstrap_admin_key(&pool, "bench admin".into(), vec![])
        .await
        .expect("bootstrap admin key");
    let token: Arc<str> = key.key.expect("key shown on create").expose().into();
    let parsed = token::parse(&token).expect("well-formed token");
    let secret = parsed.secret.to_string();
    let hash = {
        let mut conn = PgConnection::establish(&db.url).expect("connect");
        let (row, _) = find_for_auth(&mut conn, parsed.key_id)
            .expect("query key")
            .expect("key row");
        row.secret_hash
    };
    print_figure(
        "setup",
        format!(
            "db {}, ttl {}s, admin key {}",
            db.name,
            TTL.as_secs(),
            key.prefix
        ),
    );

    // (a) Cache hits. One discarded round first warms code, allocator, pool.
    let rounds = env.iters(6, 1);
    let per_round = env.iters(ROUND, 1_000);
    hits_one_task(&auth, &token, per_round).await;
    let mut one = Samples::with_capacity(rounds * per_round);
    let mut one_wall = Duration::ZERO;
    for _ in 0..rounds {
        let (s, wall) = hits_one_task(&auth, &token, per_round).await;
        one.extend(s);
        one_wall += wall;
    }
    let hit = one.summary();
    hit.print("cache hit, 1 task", Unit::Micros);
    print_rate("cache hit, 1 task, throughput", one.len(), one_wall);

    let mut two = Samples::with_capacity(rounds * per_round);
    let mut two_wall = Duration::ZERO;
    for _ in 0..rounds {
        let (s, wall) = hits_two_threads(&auth, &token, per_round / 2).await;
        two.extend(s);
        two_wall += wall;
    }
    two.summary().print("cache hit, 2 threads", Unit::Micros);
    print_rate("cache hit, 2 threads, throughput", two.len(), two_wall);

    // (b) One raw argon2id verify, as a cache miss pays it.
    let runs = env.iters(30, 2);
    assert!(token::verify_secret(&secret, &hash), "warm-up verify");
    let mut argon = Samples::with_capacity(runs);
    for _ in 0..runs {
        let ok = argon.time(|| token::verify_secret(black_box(&secret), black_box(&hash)));
        assert!(ok, "argon2 verify");
    }
    let argon = argon.summary();
    argon.print("argon2id verify (raw)", Unit::Millis);

    // (c) Cold authenticate: lookup by key id + argon2, then the cache fill.
    let mut cold = Samples::with_capacity(runs);
    for _ in 0..runs {
        auth.invalidate_all();
        let t = Instant::now();
        auth.authenticate(&token).await.expect("cold authenticate");
        cold.push(t.elapsed());
    }
    cold.summary()
        .print("cold authenticate (miss)", Unit::Millis);

    // The miss path's two parts, each as `load_and_verify` runs it: the key
    // lookup through `db::run`, and argon2 on the blocking pool.
    let mut lookup = Samples::with_capacity(runs);
    let mut blocking = Samples::with_capacity(runs);
    for _ in 0..runs {
        let key_id = parsed.key_id.to_string();
        let t = Instant::now();
        postline::db::run(&pool, move |conn| Ok(find_for_auth(conn, &key_id)?))
            .await
            .expect("lookup")
            .expect("key row");
        lookup.push(t.elapsed());
        let (secret, hash) = (secret.clone(), hash.clone());
        let t = Instant::now();
        let ok = tokio::task::spawn_blocking(move || token::verify_secret(&secret, &hash))
            .await
            .expect("verify task");
        blocking.push(t.elapsed());
        assert!(ok, "argon2 verify on the blocking pool");
    }
    lookup
        .summary()
        .print("  part: key lookup (db::run)", Unit::Millis);
    blocking
        .summary()
        .print("  part: argon2 on blocking pool", Unit::Millis);

    // Concurrent misses for one token share one lookup and one argon2 run.
    let callers = 8;
    auth.invalidate_all();
    let t = Instant::now();
    let joins: Vec<_> = (0..callers)
        .map(|_| {
            let (auth, token) = (auth.clone(), token.clone());
            tokio::spawn(async move { auth.authenticate(&token).await.is_ok() })
        })
        .collect();
    for j in joins {
        assert!(j.await.expect("task"), "concurrent cold authenticate");
    }
    print_figure(
        "cold, 8 concurrent callers",
        format!("{:.3} ms wall (one shared verify)", ms(t.elapsed())),
    );

    let ratio_mean = argon.mean.as_secs_f64() / hit.mean.as_secs_f64();
    let ratio_p50 = argon.p50.as_secs_f64() / hit.p50.as_secs_f64();
    print_figure(
        "ratio argon2 / cache hit",
        format!("{ratio_mean:.0}x (means), {ratio_p50:.0}x (p50s)"),
    );
    let mean_us = hit.mean.as_secs_f64() * 1e6;
    let p99_us = hit.p99.as_secs_f64() * 1e6;
    let verdict = if env.mode == Mode::Smoke {
        "not judged (smoke run, unoptimised build)"
    } else if mean_us <= TARGET_HIT_US && p99_us <= TARGET_HIT_US {
        "met (mean and p99)"
    } else if mean_us <= TARGET_HIT_US {
        "met on the mean, p99 above"
    } else {
        "NOT met"
    };
    print_figure(
        "target: cache hit <= 20 us",
        format!("{verdict}: mean {mean_us:.3} us, p99 {p99_us:.3} us"),
    );
    drop((auth, pool));
}

/// Refills the cache, then times `n` cache-hit calls on one worker thread.
async fn hits_one_task(auth: &AuthService, token: &Arc<str>, n: usize) -> (Samples, Duration) {
    fill(auth, token).await;
    let (auth, token) = (auth.clone(), token.clone());
    tokio::spawn(async move {
        let start = Instant::now();
        let s = hits(&auth, &token, n).await;
        (s, start.elapsed())
    })
    .await
    .expect("hit task")
}

/// Refills the cache, then times `n` cache-hit calls on each of two OS
/// threads with a current-thread runtime each (actix-web's worker model),
/// released together; the wall time is the slower thread's. (Two tasks on one
/// multi-thread runtime can end up serialised: a hit never yields, and a task
/// woken into a worker's LIFO slot is not stolen.)
async fn hits_two_threads(auth: &AuthService, token: &Arc<str>, n: usize) -> (Samples, Duration) {
    fill(auth, token).await;
    let gate = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let gate = &gate;
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    gate.wait();
                    let start = Instant::now();
                    let s = rt.block_on(hits(auth, token, n));
                    (s, start.elapsed())
                })
            })
            .collect();
        let mut all = Samples::with_capacity(2 * n);
        let mut wall = Duration::ZERO;
        for t in threads {
            let (s, w) = t.join().expect("hit thread");
            all.extend(s);
            wall = wall.max(w);
        }
        (all, wall)
    })
}

async fn hits(auth: &AuthService, token: &str, n: usize) -> Samples {
    let mut s = Samples::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let key = auth
            .authenticate(black_box(token))
            .await
            .expect("cache hit");
        s.push(t.elapsed());
        black_box(key);
    }
    s
}

/// Starts a fresh TTL window: the next calls are hits for the next 5 s.
async fn fill(auth: &AuthService, token: &str) {
    auth.invalidate_all();
    auth.authenticate(token).await.expect("cache fill");
}

fn print_rate(label: &str, calls: usize, wall: Duration) {
    print_figure(
        label,
        format!(
            "{:.0} calls/s ({:.3} us/call wall)",
            calls as f64 / wall.as_secs_f64(),
            wall.as_secs_f64() * 1e6 / calls as f64
        ),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
