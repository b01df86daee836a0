//! The failure matrix: a valid workload of about 5,200 events over 400
//! patients, mixed with every class of poison event, while the database's
//! connections are killed mid-commit, a statement is refused once, a
//! consumer is deleted mid-batch, the NATS server restarts and the host is
//! killed with SIGKILL. Afterwards every valid event is applied exactly
//! once in per-patient order (the views equal a native projection of the
//! same events), every poison event is a dead letter with its reason, lag
//! is 0, and no projection stood still for more than 5 s at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    PrivateNats, TestEnv, as_sent, assert_same_documents, event_json, faults, own_plugins,
    plugins_dir, view_documents,
};
use encounter::EncounterPlugin;
use lab::LabPlugin;
use patient::PatientPlugin;
use pharmacy::PharmacyPlugin;
use projector::sim::Simulator;
use projector_events::{Envelope, Event};
use projector_sdk::testing::Harness;
use projector_sdk::{Plugin, PluginInfo, ViewDef};
use radiology::RadiologyPlugin;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The domain plugins, whose views are checked against a native projection.
const DOMAINS: [&str; 5] = ["patient", "lab", "radiology", "pharmacy", "encounter"];

/// One message as published: its subject, bytes, and the event when valid.
struct Message {
    subject: String,
    bytes: Vec<u8>,
    valid: Option<Event>,
}

impl Message {
    fn valid(event: Event) -> Self {
        Self {
            subject: event.envelope.event_type.clone(),
            bytes: event.to_json_bytes(),
            valid: Some(as_sent(&event)),
        }
    }

    fn from_json(text: String) -> Self {
        let valid = Envelope::parse(text.as_bytes()).ok();
        let subject = serde_json::from_str::<Value>(&text).unwrap()["eventType"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            subject,
            bytes: text.into_bytes(),
            valid,
        }
    }
}

fn patient_created(id: &str, patient: &str, mrn: &str) -> String {
    event_json(
        id,
        "patient.created",
        patient,
        json!({ "mrn": mrn, "name": { "given": "Poison", "family": "Case" },
                "birthDate": "1980-02-02", "gender": "female" }),
    )
}

/// The poison of every class, and valid events whose source numbers collide.
fn poison_and_collisions(a: &str, b: &str) -> Vec<Message> {
    let nul_in_name =
        patient_created("pz-nul-name", "p-nul-name", "M").replace("\"Case\"", "\"Ca\\u0000se\"");
    let nul_in_id = patient_created("pz-nul-id", "p-nul-id", "M")
        .replace("\"pz-nul-id\"", "\"pz-nul\\u0000id\"");
    let long_key = patient_created("pz-long", &"p".repeat(300), "M");
    let potassium =
        json!({ "system": "http://loinc.org", "code": "2823-3", "display": "Potassium" });
    [
        nul_in_name,
        nul_in_id,
        long_key,
        // Valid events; the hostile plugin returns outcomes over its limits for them.
        patient_created("pz-deep", "p-deep", "deep-path"),
        patient_created("pz-move", "p-move", &format!("move:{a}")),
        // Two systems' identical order numbers for two patients.
        event_json("pz-lab-order", "lab.order.created", a, json!({
            "orderId": "ord-collide", "orderingProviderId": "u-matrix", "tests": [potassium], "priority": "routine" })),
        event_json("pz-rad-order", "radiology.order.created", b, json!({
            "orderId": "ord-collide", "orderingProviderId": "u-matrix", "modality": "CT", "priority": "routine",
            "procedure": { "system": "http://snomed.info/sct", "code": "169069000", "display": "CT of chest" } })),
        event_json("pz-lab-result", "lab.result.available", a, json!({
            "reportId": "rep-collide", "orderId": "ord-collide", "orderingProviderId": "u-matrix",
            "issuedAt": "2026-11-29T09:30:00Z",
            "results": [{ "code": potassium, "value": 4.2, "unit": "mmol/L", "interpretation": "N", "critical": false }] })),
    ]
    .into_iter()
    .map(Message::from_json)
    .collect()
}

/// Watches `GET /api/plugins` and keeps, per plugin, the longest time its
/// checkpoint stood still while it had a lag. An unanswered poll (the host
/// or NATS down) starts the clock again.
fn watch_stand_stills(
    base: Arc<Mutex<String>>,
    admin: String,
) -> (
    Arc<Mutex<HashMap<String, Duration>>>,
    tokio::task::JoinHandle<()>,
) {
    let longest = Arc::new(Mutex::new(HashMap::new()));
    let task = {
        let longest = longest.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut since: HashMap<String, (i64, Instant)> = HashMap::new();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let url = format!("{}/api/plugins", base.lock().unwrap());
                let plugins = match client.get(url).bearer_auth(&admin).send().await {
                    Ok(r) => r.json::<Value>().await.ok(),
                    Err(_) => None,
                };
                let Some(plugins) = plugins.as_ref().and_then(Value::as_array) else {
                    since.clear();
                    continue;
                };
                let now = Instant::now();
                for p in plugins {
                    let name = p["name"].as_str().unwrap_or_default().to_owned();
                    let checkpoint = p["checkpoint"].as_i64().unwrap_or(-1);
                    let lagging = p["lag"].as_u64().is_some_and(|lag| lag > 0);
                    let entry = since.entry(name.clone()).or_insert((checkpoint, now));
                    if entry.0 != checkpoint || !lagging {
                        *entry = (checkpoint, now);
                    }
                    let still = now - entry.1;
                    let mut longest = longest.lock().unwrap();
                    let worst = longest.entry(name).or_insert(Duration::ZERO);
                    *worst = (*worst).max(still);
                }
            }
        })
    };
    (longest, task)
}

async fn kill_connections(pool: &PgPool, database: &str) {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .execute(pool)
    .await
    .unwrap();
}

fn check_views<P: Plugin>(events: &[Event], stored: &HashMap<String, Value>) -> usize {
    let mut harness = Harness::<P>::new();
    let info: PluginInfo = P::describe();
    let mut applied = 0;
    for event in events {
        if info.subscribes_to(&event.envelope.event_type) {
            harness.feed(event).unwrap();
            applied += 1;
        }
    }
    for ViewDef { name, .. } in info.views {
        let documents = stored[&name].as_object().unwrap();
        let documents = documents
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_same_documents(&name, &documents, &harness.documents(&name));
    }
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_path_applies_each_valid_event_once_in_order() {
    let _heavy = crate::common::heavy().await;
    let mut nats = PrivateNats::start(&format!("matrix-{}", uuid::Uuid::new_v4().simple())).await;
    let mut env = TestEnv::on_nats("matrix", Some(&nats.url())).await;
    let dir = own_plugins(&env.tag, &DOMAINS);
    std::fs::copy(
        plugins_dir().join("testing/hostile.wasm"),
        dir.join("hostile.wasm"),
    )
    .unwrap();
    env.config.plugins_dir = dir.clone();
    env.config.batch_size = 200;
    let admin = env.token("u-admin", "admin");
    let admin_pool = PgPool::connect(&env.config.database_url_named("postgres"))
        .await
        .unwrap();

    let workload = Simulator::new(57, chrono::Utc::now() - chrono::Duration::days(1)).traffic(400);
    assert!(workload.len() >= 5_000, "{} events", workload.len());
    let (a, b) = (
        workload[0].envelope.patient_id.to_string(),
        workload[1].envelope.patient_id.to_string(),
    );
    let poison = poison_and_collisions(&a, &b);
    let mut messages: Vec<Message> = Vec::new();
    let gap = workload.len() / (poison.len() + 1);
    let mut poison = poison.into_iter();
    for (i, event) in workload.into_iter().enumerate() {
        messages.push(Message::valid(event));
        if i % gap == gap - 1
            && let Some(p) = poison.next()
        {
            messages.push(p);
        }
    }
    assert!(poison.next().is_none());

    let mut host = env.spawn_host().await;
    let pool = env.pool().await;
    let base = Arc::new(Mutex::new(host.base.clone()));
    let (stand_stills, watcher) = watch_stand_stills(base.clone(), admin.clone());
    let chunks: Vec<&[Message]> = messages.chunks(messages.len().div_ceil(6)).collect();
    let mut publisher = env.publisher();
    for (k, chunk) in chunks.iter().enumerate() {
        for (i, m) in chunk.iter().enumerate() {
            let id = format!("m-{k}-{i}");
            publisher
                .publish_raw(&m.subject, Some(&id), m.bytes.clone())
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        // Each failure lands while the host works through the chunk.
        match k {
            0 => {
                for _ in 0..20 {
                    kill_connections(&admin_pool, &env.tag).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            1 => {
                faults::install(&pool, "processed_events").await;
                faults::arm(&pool).await;
            }
            2 => {
                let stream = env.js.get_stream(&env.config.stream_name).await.unwrap();
                let lab = env.consumers(&stream, "lab").await;
                assert!(!lab.is_empty(), "the host reads lab on a consumer");
                for name in lab {
                    stream.delete_consumer(&name).await.unwrap();
                }
            }
            3 => {
                nats.restart().await;
                publisher = env.publisher();
            }
            4 => {
                host.kill().await;
                host = env.spawn_host().await;
                *base.lock().unwrap() = host.base.clone();
            }
            _ => {}
        }
    }

    let stream = env.js.get_stream(&env.config.stream_name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    for name in DOMAINS.iter().chain(&["hostile"]) {
        while env.backlog(&pool, &stream, name).await > 0 {
            assert!(Instant::now() < deadline, "{name} did not catch up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    watcher.abort();
    assert!(
        faults::fired(&pool).await,
        "the refused statement was tried again"
    );

    let valid: Vec<Event> = messages.iter().filter_map(|m| m.valid.clone()).collect();
    let mut stored = HashMap::new();
    for name in [
        PatientPlugin::describe().views,
        LabPlugin::describe().views,
        RadiologyPlugin::describe().views,
        PharmacyPlugin::describe().views,
        EncounterPlugin::describe().views,
    ]
    .concat()
    .into_iter()
    .map(|v| v.name)
    {
        let documents = view_documents(&pool, &name).await;
        stored.insert(name, json!(documents));
    }
    let applied = [
        ("patient", check_views::<PatientPlugin>(&valid, &stored)),
        ("lab", check_views::<LabPlugin>(&valid, &stored)),
        ("radiology", check_views::<RadiologyPlugin>(&valid, &stored)),
        ("pharmacy", check_views::<PharmacyPlugin>(&valid, &stored)),
        ("encounter", check_views::<EncounterPlugin>(&valid, &stored)),
    ];
    for (plugin, expected) in applied {
        let counted: i64 =
            sqlx::query_scalar("SELECT sum(applied)::bigint FROM checkpoints WHERE plugin = $1")
                .bind(plugin)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            counted, expected as i64,
            "{plugin}: each event applied exactly once"
        );
    }

    let letters: Vec<(String, String)> =
        sqlx::query_as("SELECT plugin, reason FROM dead_letters ORDER BY plugin, stream_seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let reasons = |plugin: &str| -> Vec<&str> {
        letters
            .iter()
            .filter(|(p, _)| p == plugin)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    let unstorable = [
        "$.payload.name.family holds U+0000",
        "$.eventId holds U+0000",
        "patientId is 300 bytes, over the limit of 128",
    ];
    let patient = reasons("patient");
    assert_eq!(patient.len(), 3, "{letters:?}");
    for (got, want) in patient.iter().zip(unstorable) {
        assert!(got.contains(want), "`{got}` lacks `{want}`");
    }
    let hostile = reasons("hostile");
    let hostile_wants: Vec<String> = unstorable
        .iter()
        .map(|s| s.to_string())
        .chain([
            "path is 199999 bytes, over the limit of 256".to_owned(),
            format!("from patient `{a}` to `p-move`"),
        ])
        .collect();
    assert_eq!(hostile.len(), hostile_wants.len(), "{letters:?}");
    for want in &hostile_wants {
        assert!(
            hostile.iter().any(|got| got.contains(want.as_str())),
            "no hostile letter says `{want}`: {hostile:?}"
        );
    }
    for plugin in ["lab", "radiology", "pharmacy", "encounter"] {
        assert_eq!(reasons(plugin), Vec::<&str>::new(), "{plugin}");
    }

    let stand_stills = stand_stills.lock().unwrap().clone();
    println!("longest stand-still with a lag, per plugin: {stand_stills:?}");
    for (plugin, longest) in &stand_stills {
        assert!(
            *longest <= Duration::from_secs(5),
            "{plugin} stood still {longest:?} with events waiting"
        );
    }
    host.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}
