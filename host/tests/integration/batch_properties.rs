//! A property of the batch path, against the real PostgreSQL: whatever mix
//! of good and bad events arrives, however it is cut into batches, and
//! wherever a commit fails and is retried or a committed batch comes again,
//! every good event is applied exactly once in stream order (the views
//! equal a native projection), every bad one is a dead letter, the events a
//! poisoned patient has after its poison are parked, and the checkpoint
//! ends at the last event; so too when each batch projects while the one
//! before commits, as a projection runs them. `PROPTEST_CASES` sets the
//! number of cases (500).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use patient::PatientPlugin;
use projector::config::Config;
use projector::ingest::{Batcher, Flight, Item};
use projector::runtime::{Plugin, Runtime};
use projector::sim::Simulator;
use projector::store::Fence;
use projector::store::claim::Lease;
use projector::store::{self, CommitError, DocCache, Target};
use projector_events::{Envelope, Event};
use projector_sdk::Plugin as _;
use projector_sdk::testing::Harness;
use proptest::prelude::*;
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool};

/// A kind of bad event.
#[derive(Debug, Clone, Copy)]
enum Bad {
    /// Not JSON: malformed.
    NotJson,
    /// U+0000 in the family name: malformed.
    Nul,
    /// A patient id over 128 bytes: malformed.
    LongPatient,
    /// Published on another event type's subject: malformed.
    WrongSubject,
    /// A family name of 5 MiB: over the limit of JSON one outcome may
    /// carry, so the plugin's outcome is refused and the patient's later
    /// events park behind it.
    Huge,
}

/// One generated case.
#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    patients: usize,
    bad: Vec<(usize, Bad)>,
    /// Allergies of 900 KiB each for one patient, in a row: the fifth takes
    /// the chart over 4 MiB, which the database refuses, so the batch is
    /// split until it stands alone.
    big: Option<(usize, usize)>,
    sizes: Vec<usize>,
    failures: Vec<bool>,
    replays: Vec<bool>,
    /// Each batch projected while the one before commits; an injected
    /// serialization failure resumes after the checkpoint, an injected
    /// refusal commits the batch the careful way and projects the next
    /// again. No replays then.
    overlapped: bool,
}

fn any_case() -> impl Strategy<Value = Case> {
    let bad = prop_oneof![
        3 => Just(Bad::NotJson),
        3 => Just(Bad::Nul),
        3 => Just(Bad::LongPatient),
        3 => Just(Bad::WrongSubject),
        1 => Just(Bad::Huge),
    ];
    (
        any::<u64>(),
        1..=3usize,
        prop::collection::vec((any::<usize>(), bad), 0..5),
        prop::option::weighted(0.15, (any::<usize>(), 1..=6usize)),
        prop::collection::vec(1..=12usize, 1..6),
        prop::collection::vec(prop::bool::weighted(0.25), 1..6),
        prop::collection::vec(prop::bool::weighted(0.2), 1..6),
        any::<bool>(),
    )
        .prop_map(
            |(seed, patients, bad, big, sizes, failures, replays, overlapped)| Case {
                seed,
                patients,
                bad,
                big,
                sizes,
                failures,
                replays,
                overlapped,
            },
        )
}

/// A message as published, and what it should come to.
struct Message {
    subject: String,
    raw: Vec<u8>,
    event: Option<Event>,
    bad: Option<Bad>,
    big: bool,
}

impl Message {
    fn good(event: Event, big: bool) -> Self {
        Self {
            subject: event.envelope.event_type.clone(),
            raw: event.to_json_bytes(),
            event: Some(Envelope::parse(&event.to_json_bytes()).unwrap()),
            bad: None,
            big,
        }
    }
}

fn bad_message(kind: Bad, next_to: &Event, n: usize) -> Message {
    let patient = next_to.envelope.patient_id.as_str();
    let created = |patient: &str, family: &str| {
        serde_json::json!({
            "eventId": format!("bad-{n}"), "eventType": "patient.created",
            "timestamp": "2026-11-01T12:00:00Z", "patientId": patient, "userId": "u-test",
            "portalType": "admin",
            "payload": { "mrn": "M", "name": { "given": "G", "family": family },
                         "birthDate": "1970-01-01", "gender": "female" },
        })
        .to_string()
    };
    let (subject, text) = match kind {
        Bad::NotJson => ("patient.created".to_owned(), "{not json".to_owned()),
        Bad::Nul => (
            "patient.created".to_owned(),
            created(patient, "A").replace("\"A\"", "\"A\\u0000\""),
        ),
        Bad::LongPatient => ("patient.created".to_owned(), created(&"p".repeat(200), "A")),
        Bad::WrongSubject => ("patient.updated".to_owned(), created(patient, "A")),
        Bad::Huge => (
            "patient.created".to_owned(),
            created(patient, &"x".repeat(5 << 20)),
        ),
    };
    Message {
        subject,
        raw: text.into_bytes(),
        event: None,
        bad: Some(kind),
        big: false,
    }
}

fn messages(case: &Case) -> Vec<Message> {
    let start = "2026-11-01T00:00:00Z".parse().unwrap();
    let events = Simulator::new(case.seed, start).traffic(case.patients);
    let mut out: Vec<Message> = events
        .into_iter()
        .map(|e| Message::good(e, false))
        .collect();
    if let Some((at, count)) = case.big {
        let at = at % out.len();
        let patient = out[at]
            .event
            .as_ref()
            .unwrap()
            .envelope
            .patient_id
            .to_string();
        for n in 0..count {
            out.insert(
                at,
                Message::good(crate::common::big_allergy(&patient, n), true),
            );
        }
    }
    for (n, (at, kind)) in case.bad.iter().enumerate() {
        let at = at % out.len();
        let next_to = out[at..]
            .iter()
            .chain(&out[..at])
            .find_map(|m| m.event.clone())
            .expect("the workload has good events");
        out.insert(at, bad_message(*kind, &next_to, n));
    }
    out
}

/// The database, the runtime and the patient plugin, made once.
struct World {
    pool: PgPool,
    /// The lease on the projection's one partition, which every commit
    /// checks.
    claim: Lease,
    plugin: Plugin,
    database: String,
    admin_url: String,
}

async fn world() -> World {
    let mut config = Config::from_env().expect("config");
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins-dist");
    config.compile_cache = Some(plugins.join(".compile-cache"));
    let database = format!(
        "t_props_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let pool = store::connect(&config.database_url_named(&database), config.db_connections)
        .await
        .expect("PostgreSQL is running (scripts/services)");
    let runtime = Runtime::from_config(&config).unwrap();
    let bytes = std::fs::read(plugins.join("patient.wasm"))
        .expect("plugins are built: run scripts/build-plugins");
    let plugin = Plugin::load(&runtime, &bytes).await.unwrap();
    store::ensure_views(&pool, &Target::live("patient"), &plugin.info)
        .await
        .unwrap();
    crate::common::faults::install(&pool, "checkpoints").await;
    let claim = Lease::open(
        &pool,
        "patient",
        std::time::Duration::from_secs(10),
        uuid::Uuid::new_v4(),
    )
    .await
    .unwrap();
    assert!(
        claim.try_take(0).await.unwrap(),
        "nobody else claims this database's projection"
    );
    World {
        claim,
        pool,
        plugin,
        database,
        admin_url: config.database_url_named("postgres"),
    }
}

async fn checkpoint(pool: &PgPool) -> u64 {
    let all = store::checkpoints::all(pool).await.unwrap();
    all.get("patient").map_or(0, |c| c.seq.max(0) as u64)
}

/// The case's batches, each projected while the one before commits, as a
/// projection runs them: once that one is done, the next is projected
/// again unless it committed as projected; a failure resumes after the
/// checkpoint.
async fn run_overlapped(batcher: &Batcher<'_>, pool: &PgPool, items: &[Item], case: &Case) {
    let mut flight: Option<(Flight, Vec<Item>)> = None;
    let (mut at, mut b) = (0, 0);
    // Where a failure was injected: once per place, so the run gets past.
    let mut failed_at = HashSet::new();
    // A batch committed the careful way where it was staged behind one
    // that committed as projected would have been projected wrongly (a
    // version left unresolved, a stale document): only a refusal injected
    // into its own transaction may send it there.
    let (mut refusals, mut recovered) = (0, 0);
    while at < items.len() || flight.is_some() {
        let end = (at + case.sizes[b % case.sizes.len()]).min(items.len());
        let cut = items[at..end].to_vec();
        if case.failures[b % case.failures.len()] && failed_at.insert(at) {
            // In turn: a serialization failure, and a refusal of the
            // content, which commits the batch the careful way.
            let code = if failed_at.len() % 2 == 1 {
                "40001"
            } else {
                refusals += 1;
                "22000"
            };
            crate::common::faults::arm_as(pool, code).await;
        }
        b += 1;
        let step: anyhow::Result<()> = async {
            let (landed, staged) = match flight.take() {
                Some((mut before, before_items)) => {
                    let (commit, earlier) = before.committing();
                    let stage = batcher.stage(cut.clone(), 0, Some(earlier));
                    let (done, staged) = tokio::join!(commit.as_mut(), stage);
                    let (_, version) = batcher.land(before, done, &before_items, 0).await?;
                    recovered += usize::from(version.is_none());
                    (Some(version), staged?)
                }
                None => (None, batcher.stage(cut.clone(), 0, None).await?),
            };
            let mut staged = match landed {
                Some(None) => batcher.stage(cut.clone(), 0, None).await?,
                _ => staged,
            };
            if let (Some(Some(version)), Some(staged)) = (&landed, &mut staged) {
                staged.resolve(version);
            }
            if let Some(staged) = staged {
                match staged.launch(pool) {
                    Ok(next) => flight = Some((next, cut)),
                    Err(refused) => {
                        batcher.recover(&cut, 0, refused).await?;
                    }
                }
            }
            Ok(())
        }
        .await;
        match step {
            Ok(()) => at = end,
            Err(_) => {
                flight = None;
                at = checkpoint(pool).await as usize;
            }
        }
    }
    crate::common::faults::disarm(pool).await;
    assert!(
        recovered <= refusals,
        "{recovered} batches committed the careful way, {refusals} refusals injected"
    );
}

/// Runs one case the way a projection does, then checks the invariant.
async fn run(world: &World, case: &Case) {
    let pool = &world.pool;
    // Each case starts from empty tables; the audit trail refuses deletes,
    // so its triggers are off for the reset.
    let mut reset = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *reset)
        .await
        .unwrap();
    let views = PatientPlugin::describe()
        .views
        .into_iter()
        .map(|v| format!("view_{}", v.name));
    for table in views.chain(
        [
            "processed_events",
            "checkpoints",
            "dead_letters",
            "parked_events",
            "notifications",
            "notification_seqs",
            "audit_log",
        ]
        .map(str::to_owned),
    ) {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *reset)
            .await
            .unwrap();
    }
    reset.commit().await.unwrap();
    let messages = messages(case);
    let items: Vec<Item> = messages
        .iter()
        .enumerate()
        // One partition: every event is this projection's.
        .map(|(i, m)| Item::from_stream(i as u64 + 1, m.subject.clone(), m.raw.clone(), 0))
        .collect();
    let cache = DocCache::new(64);
    let target = Target::live("patient");
    let batcher = Batcher {
        plugin: &world.plugin,
        target: &target,
        pool,
        cache: &cache,
        max_attempts: 1,
        fence: Some(Fence {
            pid: world.claim.pid,
            partitions: vec![0],
        }),
    };
    if case.overlapped {
        run_overlapped(&batcher, pool, &items, case).await;
    }
    let (mut at, mut b) = (0, 0);
    while at < items.len() && !case.overlapped {
        let end = (at + case.sizes[b % case.sizes.len()]).min(items.len());
        let batch: Vec<Item> = items[at..end].to_vec();
        if case.failures[b % case.failures.len()] {
            crate::common::faults::arm(pool).await;
            let failed = batcher.commit(batch.clone(), 0).await;
            assert!(
                failed.is_err(),
                "batch {b}: the injected failure is reported"
            );
            assert_eq!(
                checkpoint(pool).await,
                at as u64,
                "a failed batch moves nothing"
            );
        }
        let done = batcher.commit(batch.clone(), 0).await;
        assert!(done.is_ok(), "batch {b}: {:?}", done.err());
        assert_eq!(checkpoint(pool).await, end as u64);
        if case.replays[b % case.replays.len()] {
            let again = batcher.commit(batch, 0).await;
            let behind = again
                .as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<CommitError>())
                .is_some_and(|e| matches!(e, CommitError::Behind { .. }));
            assert!(behind, "batch {b} committed again: {again:?}");
            assert_eq!(checkpoint(pool).await, end as u64);
        }
        at = end;
        b += 1;
    }

    // What a native projection of the good events gives, with the events
    // a poisoned patient has after its poison parked.
    let mut harness = Harness::<PatientPlugin>::new();
    let (mut poisoned, mut parked, mut dead) = (HashSet::new(), Vec::new(), Vec::new());
    let mut bigs: BTreeMap<String, usize> = BTreeMap::new();
    let mut applied = 0;
    for (i, m) in messages.iter().enumerate() {
        let seq = i as i64 + 1;
        match (&m.event, m.bad) {
            // Well-formed: the plugin would be called, so it waits behind
            // a poison of its patient like any event.
            (_, Some(Bad::Huge)) => {
                let patient = Envelope::parse(&m.raw).unwrap().envelope.patient_id;
                if poisoned.contains(patient.as_str()) {
                    parked.push(seq);
                } else {
                    dead.push(seq);
                    poisoned.insert(patient.to_string());
                }
            }
            // Malformed: a dead letter whoever it names.
            (_, Some(_)) => dead.push(seq),
            (Some(event), None) if poisoned.contains(event.envelope.patient_id.as_str()) => {
                parked.push(seq)
            }
            (Some(event), None) => {
                let patient = event.envelope.patient_id.to_string();
                let big = bigs.entry(patient.clone()).or_default();
                *big += usize::from(m.big);
                if m.big && *big == 5 {
                    dead.push(seq);
                    poisoned.insert(patient);
                } else {
                    harness.feed(event).unwrap();
                    applied += 1;
                }
            }
            (None, None) => unreachable!(),
        }
    }
    for view in PatientPlugin::describe().views {
        let stored: BTreeMap<String, Value> = sqlx::query_as::<_, (String, Value)>(AssertSqlSafe(
            format!("SELECT key, doc FROM view_{}", view.name),
        ))
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        assert_eq!(stored, harness.documents(&view.name), "view {}", view.name);
    }
    let seqs = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_all(pool)
            .await
            .unwrap()
    };
    assert_eq!(
        seqs("SELECT stream_seq FROM dead_letters ORDER BY stream_seq").await,
        dead
    );
    assert_eq!(
        seqs("SELECT stream_seq FROM parked_events ORDER BY stream_seq").await,
        parked
    );
    let counted: i64 =
        sqlx::query_scalar("SELECT sum(applied)::bigint FROM checkpoints WHERE plugin = 'patient'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(counted, applied, "each good event applied exactly once");
    assert_eq!(checkpoint(pool).await, messages.len() as u64);
}

#[test]
fn any_mix_of_events_batches_and_failures_keeps_the_invariant() {
    let _heavy = crate::common::heavy_blocking();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = rt.block_on(world());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        // Each case holds real transactions: a short shrink is enough to read.
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    });
    let result = runner.run(&any_case(), |case| {
        rt.block_on(run(&world, &case));
        Ok(())
    });
    rt.block_on(async {
        drop(world.claim);
        world.pool.close().await;
        if let Ok(admin) = PgPool::connect(&world.admin_url).await {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                world.database
            )))
            .execute(&admin)
            .await;
        }
    });
    result.unwrap();
}
