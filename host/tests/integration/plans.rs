//! The hot queries keep their indexes on tables of a realistic size, in a
//! database whose autovacuum never runs: the host's own statistics upkeep
//! (store::statistics) is what keeps the plans right.
//!
//! What goes wrong without it: sqlx prepares each statement once per
//! connection, and PostgreSQL caches a generic plan for it after a few
//! executions. Made while a table was small, that plan is a sequential
//! scan, and it stays until something invalidates it, such as an
//! `ANALYZE` of the table; inserts never do. So the test prepares and runs
//! every hot query on a connection while the tables are empty, grows the
//! tables, lets the host's upkeep run, and explains the same prepared
//! statements on the same connection: index use, no sequential scan. It
//! then checks fresh custom and generic plans too.

use crate::common::TestEnv;
use projector::store::statistics;
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool};

/// A hot query as the host runs it (the source names where), with
/// parameters, and the table it must reach by an index.
struct Hot {
    name: &'static str,
    sql: &'static str,
    params: &'static str,
    types: &'static str,
    table: &'static str,
}

/// The statements the host runs per batch, per push and per resend, as
/// written in the functions named.
const HOT: &[Hot] = &[
    Hot {
        name: "processed-event lookup (ingest::batch::not_yet_applied)",
        sql: "SELECT event_id FROM processed_events WHERE plugin = $1 AND event_id = ANY($2)",
        params: "'lab', ARRAY['e-3-77', 'e-1-5']",
        types: "text, text[]",
        table: "processed_events",
    },
    Hot {
        name: "document load (store::overlay)",
        sql: "SELECT key, xmin::text, doc FROM view_patient_chart WHERE key = ANY($1)",
        params: "ARRAY['p-17', 'p-40017']",
        types: "text[]",
        table: "view_patient_chart",
    },
    Hot {
        name: "a patient's records (store::queries::by_patient)",
        sql: "SELECT doc FROM view_lab_results WHERE doc->>'patientId' = $1 ORDER BY doc->>$2 DESC NULLS LAST, key",
        params: "'p-17', 'issuedAt'",
        types: "text, text",
        table: "view_lab_results",
    },
    Hot {
        name: "parking check (store::queries::poisoned)",
        sql: "SELECT patient_id, true FROM dead_letters
              WHERE plugin = $1 AND poisons AND status IN ('dead', 'retrying') AND patient_id = ANY($2)
              UNION
              SELECT patient_id, false FROM parked_events WHERE plugin = $1 AND patient_id = ANY($2)",
        params: "'lab', ARRAY['p-17', 'p-18']",
        types: "text, text[]",
        table: "parked_events",
    },
    Hot {
        name: "dead letters to re-drive (ingest::projection::retry_dead_letters)",
        sql: "SELECT id, stream_seq, subject, raw FROM dead_letters
              WHERE plugin = $1 AND status = 'retrying' ORDER BY stream_seq",
        params: "'lab'",
        types: "text",
        table: "dead_letters",
    },
    Hot {
        name: "notification dedupe (store::outbox::insert)",
        sql: "SELECT n.user_id, n.dedupe_key FROM notifications n
              JOIN UNNEST($1::text[], $2::text[]) AS c(u, k) ON n.user_id = c.u AND n.dedupe_key = c.k",
        params: "ARRAY['u-provider-3'], ARRAY['lab_result_available:r-17']",
        types: "text[], text[]",
        table: "notifications",
    },
    Hot {
        name: "missed notifications (store::outbox::since)",
        sql: "SELECT notification_id FROM notifications WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        params: "'u-provider-3', 4900, 100",
        types: "text, bigint, bigint",
        table: "notifications",
    },
    Hot {
        name: "replayed notifications (store::outbox::newest_since)",
        sql: "SELECT notification_id FROM notifications WHERE user_id = $1 AND seq > $2 ORDER BY seq DESC LIMIT $3",
        params: "'u-provider-3', 0, 1001",
        types: "text, bigint, bigint",
        table: "notifications",
    },
    Hot {
        name: "resends (store::outbox::unacknowledged)",
        sql: "SELECT notification_id FROM notifications
              WHERE user_id = ANY($1) AND requires_ack AND acknowledged_at IS NULL ORDER BY created_at, seq",
        params: "ARRAY['u-provider-3']",
        types: "text[]",
        table: "notifications",
    },
    Hot {
        name: "escalation (store::outbox::escalate_due)",
        sql: "SELECT notification_id FROM notifications
              WHERE requires_ack AND acknowledged_at IS NULL AND escalation_of IS NULL
                AND escalation_level < $2 AND created_at <= now() - $1::interval
              ORDER BY created_at LIMIT 500",
        params: "'10 minutes', 1",
        types: "interval, smallint",
        table: "notifications",
    },
    Hot {
        name: "unpushed notifications (store::notifications::sweep_unpushed)",
        sql: "SELECT notification_id FROM notifications
              WHERE pushed_at IS NULL AND created_at <= now() - $1::interval
                AND (swept_at IS NULL OR swept_at <= now() - $1::interval)
              ORDER BY user_id, seq LIMIT 1000",
        params: "'5 seconds'",
        types: "interval",
        table: "notifications",
    },
    Hot {
        name: "a patient's alerts (store::outbox::alerts)",
        sql: "SELECT notification_id FROM notifications
              WHERE patient_id = $1 AND priority = 'urgent' AND escalation_of IS NULL
              ORDER BY event_at DESC, seq DESC",
        params: "'p-17'",
        types: "text",
        table: "notifications",
    },
];

/// Fills the tables as a few weeks of a hospital's traffic would.
async fn fill(pool: &PgPool) {
    let statements = [
        // 5 plugins × 120,000 events.
        "INSERT INTO processed_events (plugin, event_id, day)
         SELECT plugin, 'e-' || g || '-' || (g % 97), current_date - (g % 30)
         FROM unnest(ARRAY['patient', 'lab', 'radiology', 'pharmacy', 'encounter']) AS plugin,
              generate_series(1, 120000) AS g",
        "INSERT INTO view_patient_chart (key, doc, updated_at)
         SELECT 'p-' || g, jsonb_build_object('patientId', 'p-' || g, 'mrn', 'M' || g), now()
         FROM generate_series(1, 60000) AS g",
        "INSERT INTO view_lab_results (key, doc, updated_at)
         SELECT 'p-' || (g % 60000) || '/r-' || g,
                jsonb_build_object('patientId', 'p-' || (g % 60000), 'reportId', 'r-' || g,
                                   'issuedAt', '2026-11-01T00:00:00Z'), now()
         FROM generate_series(1, 150000) AS g",
        // Notifications: 40 providers, one in twenty needing an
        // acknowledgement, nearly all of them acknowledged and pushed.
        "INSERT INTO notifications (notification_id, user_id, seq, event_id, patient_id, kind, priority,
                                    requires_ack, dedupe_key, body, event_at, created_at,
                                    acknowledged_at, pushed_at)
         SELECT gen_random_uuid(), 'u-provider-' || (g % 40), g / 40, 'e-' || g, 'p-' || (g % 60000),
                'lab_result_available', CASE WHEN g % 20 = 0 THEN 'urgent' ELSE 'normal' END,
                g % 20 = 0, 'lab_result_available:r-' || g, '{}'::jsonb,
                now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval,
                CASE WHEN g % 20 = 0 AND g % 1000 <> 0 THEN now() END, now()
         FROM generate_series(1, 200000) AS g",
        "INSERT INTO dead_letters (plugin, stream_seq, subject, event_id, patient_id, reason, raw, attempts, poisons, status)
         SELECT 'lab', g, 'lab.result.available', 'e-' || g, 'p-' || g, 'bad', '\\x00', 1, g % 2 = 0,
                CASE WHEN g % 10 = 0 THEN 'dead' ELSE 'resolved' END
         FROM generate_series(1, 20000) AS g",
        "INSERT INTO parked_events (plugin, stream_seq, subject, patient_id, raw)
         SELECT 'lab', g, 'lab.result.available', 'p-' || (g % 5000), '\\x00'
         FROM generate_series(1, 40000) AS g",
    ];
    for statement in statements {
        sqlx::query(AssertSqlSafe(statement))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Every node of a JSON plan, depth first.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut all = vec![plan];
    for child in plan["Plans"].as_array().into_iter().flatten() {
        all.extend(nodes(child));
    }
    all
}

/// The plan PostgreSQL chooses for the statement prepared as sqlx
/// prepares it, executed with its parameters under `mode` (custom plans
/// are made per execution; sqlx's cached statements may get a generic one).
async fn explain_prepared(pool: &PgPool, hot: &Hot, mode: &str) -> Value {
    let mut connection = pool.acquire().await.unwrap();
    for statement in [
        format!("SET plan_cache_mode = {mode}"),
        format!("PREPARE hot ({}) AS {}", hot.types, hot.sql),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    let plan: Value = sqlx::query_scalar(AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) EXECUTE hot ({})",
        hot.params
    )))
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    for statement in ["DEALLOCATE hot", "RESET plan_cache_mode"] {
        sqlx::query(statement)
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    plan[0]["Plan"].clone()
}

/// Checks one plan: the table reached only through an index.
fn check(what: &str, plan: &Value, table: &str) {
    let on_table: Vec<&Value> = nodes(plan)
        .into_iter()
        .filter(|n| n["Relation Name"] == table)
        .collect();
    assert!(!on_table.is_empty(), "{what}: {table} not read?\n{plan:#}");
    for node in on_table {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        let by_index = match kind {
            "Index Scan" | "Index Only Scan" => true,
            // The rows an index found, read in page order.
            "Bitmap Heap Scan" => nodes(node)
                .iter()
                .any(|n| n["Node Type"] == "Bitmap Index Scan"),
            _ => false,
        };
        assert!(by_index, "{what}: {kind} on {table}\n{plan:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_queries_use_their_indexes_on_grown_tables_without_autovacuum() {
    let _heavy = crate::common::heavy().await;
    let env = TestEnv::new("plans").await;
    // The plugins' view tables, as a host creates them.
    let host = env.start().await;
    host.stop();
    let pool = env.pool().await;
    projector::store::statistics::autovacuum_off(&pool)
        .await
        .unwrap();
    // A host's connection as a fresh deployment has it: every hot query
    // prepared and run while the tables are empty, so that PostgreSQL
    // caches its generic plan.
    let mut early = pool.acquire().await.unwrap();
    for (i, hot) in HOT.iter().enumerate() {
        sqlx::query(AssertSqlSafe(format!(
            "PREPARE hot{i} ({}) AS {}",
            hot.types, hot.sql
        )))
        .execute(&mut *early)
        .await
        .unwrap();
        for _ in 0..6 {
            sqlx::query(AssertSqlSafe(format!("EXECUTE hot{i} ({})", hot.params)))
                .execute(&mut *early)
                .await
                .unwrap();
        }
    }
    // Then weeks of traffic.
    fill(&pool).await;
    // The statistics collector's counts reach pg_stat_user_tables shortly,
    // not all at once.
    let grown = [
        "processed_events",
        "notifications",
        "view_patient_chart",
        "view_lab_results",
        "dead_letters",
        "parked_events",
    ];
    let analysed = std::sync::Mutex::new(Vec::<String>::new());
    crate::common::eventually("the grown tables are analysed", || async {
        let done = statistics::analyse_due(&pool).await.unwrap();
        let mut analysed = analysed.lock().unwrap();
        analysed.extend(done.into_iter().map(|(table, _)| table));
        grown
            .iter()
            .all(|t| analysed.iter().any(|a| a == t))
            .then_some(())
    })
    .await;
    assert_eq!(
        statistics::analyse_due(&pool).await.unwrap(),
        vec![],
        "nothing is due right after"
    );

    for (i, hot) in HOT.iter().enumerate() {
        let plan: Value = sqlx::query_scalar(AssertSqlSafe(format!(
            "EXPLAIN (FORMAT JSON) EXECUTE hot{i} ({})",
            hot.params
        )))
        .fetch_one(&mut *early)
        .await
        .unwrap();
        check(
            &format!("{} (prepared early)", hot.name),
            &plan[0]["Plan"],
            hot.table,
        );
    }
    drop(early);
    for hot in HOT {
        for mode in ["force_custom_plan", "force_generic_plan"] {
            let plan = explain_prepared(&pool, hot, mode).await;
            check(&format!("{} ({mode})", hot.name), &plan, hot.table);
        }
    }
}
