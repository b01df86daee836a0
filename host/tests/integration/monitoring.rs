//! Issue 16: the compose stack's monitoring agrees with the host and with
//! itself. Grafana's dashboards (`deploy/grafana/dashboards/*.json`) have
//! what Grafana needs to load them; every `projector_` metric a dashboard
//! or an alert rule (`deploy/prometheus/alerts.yml`) names is one a real
//! host exports on `/metrics`, so a renamed metric cannot leave a panel
//! empty or an alert silent; every alert rule is complete; and
//! `docker-compose config` accepts the stack (the three NATS nodes, the two
//! hosts, Prometheus and Grafana), whose services Prometheus scrapes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use projector_events::coded::FIELDS;

use crate::common::{SEED, TestEnv, metrics};

/// Where Grafana's dashboards are.
const DASHBOARDS: &str = "deploy/grafana/dashboards";
/// Prometheus's alert rules.
const ALERTS: &str = "deploy/prometheus/alerts.yml";
/// Prometheus's configuration.
const PROMETHEUS: &str = "deploy/prometheus/prometheus.yml";
/// Grafana's data source.
const DATASOURCE: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";

/// The prefixes of the metrics the dashboards and rules may name: the
/// host's own, the NATS exporter's (core and JetStream) and MinIO's, and
/// Prometheus's `up`. A name outside them is a typo, or a word the
/// tokenizer below took for a metric.
const KNOWN_PREFIXES: &[&str] = &["projector_", "gnatsd_", "jetstream_", "minio_"];

/// The services the stack must run (issue 16).
const REQUIRED_SERVICES: &[&str] = &[
    "nats-1",
    "nats-2",
    "nats-3",
    "projector-1",
    "projector-2",
    "prometheus",
    "grafana",
];

/// The path of a file of the repository, from the host crate's folder.
fn repo_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// A file of the repository as text; the test fails naming it if it cannot
/// be read.
fn read(path: &str) -> String {
    let path = repo_path(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A YAML file of the repository as a JSON value, so YAML and JSON files
/// are checked with the same code.
fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// Every dashboard, by file name: the JSON files of [`DASHBOARDS`], parsed.
/// Grafana provisions every file there, so every one is checked.
fn dashboards() -> BTreeMap<String, Value> {
    let dir = repo_path(DASHBOARDS);
    let mut dashboards = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).expect("a dashboard");
            let dashboard =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            dashboards.insert(name, dashboard);
        }
    }
    assert!(
        dashboards.len() >= 3,
        "the pipeline, NATS and MinIO dashboards: {dashboards:?}"
    );
    dashboards
}

/// A dashboard's panels, with those nested in collapsed rows, which Grafana
/// keeps inside the row's own `panels`.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Panel types that show no data and so have no queries.
fn shows_no_data(panel: &Value) -> bool {
    matches!(panel["type"].as_str(), Some("row" | "text"))
}

/// Every query of every dashboard: where it is (`file: panel`) and its
/// PromQL.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let place = format!("{file}: {}", panel["title"]);
                let expr = target["expr"].as_str().unwrap_or_default().to_owned();
                queries.push((place, expr));
            }
        }
    }
    queries
}

/// Every alert rule of [`ALERTS`], across its groups.
fn alert_rules() -> Vec<Value> {
    let rules: Vec<Value> = yaml(ALERTS)["groups"]
        .as_array()
        .expect("alerts.yml has `groups`")
        .iter()
        .flat_map(|group| {
            group["rules"]
                .as_array()
                .unwrap_or_else(|| panic!("group {} has `rules`", group["name"]))
                .clone()
        })
        .collect();
    assert!(!rules.is_empty(), "alerts.yml has rules");
    rules
}

/// PromQL words that are not metric names: aggregations (followed by `by`
/// or `without` rather than a parenthesis, so not caught as functions),
/// binary operators, modifiers and number words; the words that open label
/// lists are [`LABEL_LISTS`].
const NOT_METRICS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Words after which a parenthesis holds label names, not expressions.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Whether `c` may start a PromQL identifier.
fn identifier_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

/// Whether `c` may continue a PromQL identifier.
fn identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index just past the string literal opening at `start` (`"…"`, `'…'`
/// with backslash escapes, or a raw `` `…` ``).
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index just past the bracket that closes the one opening at `start`
/// (`{…}` label matchers, `[…]` ranges, `(…)` label lists), stepping over
/// string literals, whose text may hold brackets.
fn skip_balanced(chars: &[char], start: usize) -> usize {
    let open = chars[start];
    let close = match open {
        '{' => '}',
        '[' => ']',
        _ => ')',
    };
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The metric names a PromQL expression selects, found with a small
/// tokenizer rather than a PromQL parser: an identifier is a metric name
/// when it stands alone or is followed by `{` or `[`, unless it is a
/// keyword or aggregation ([`NOT_METRICS`]); one followed by `(` is a
/// function. What cannot hold metric names is skipped: string literals,
/// label matchers `{…}`, ranges `[…]`, the label lists of `by (…)` and
/// its kin, numbers and durations, Grafana's `$variables`. (A selector
/// written `{__name__="…"}` is not seen; the files here use none.)
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if matches!(c, '{' | '[') {
            i = skip_balanced(&chars, i);
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable, or a number or duration (`0.99`, `5m`, `1e3`).
            i += 1;
            while i < chars.len() && (identifier_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if identifier_start(c) {
            let start = i;
            while i < chars.len() && identifier_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let before_parenthesis = chars.get(next) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if before_parenthesis {
                    i = skip_balanced(&chars, next);
                }
            } else if !before_parenthesis && !NOT_METRICS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The sample names a host's `/metrics` text can show, from its `# TYPE`
/// lines: a counter's samples end in `_total`, a histogram's in `_bucket`,
/// `_sum` and `_count`, a summary's in `_sum` and `_count`, an info's in
/// `_info`; a gauge's are its name. A family with no series yet has no
/// `# TYPE` line either, hence [`metrics_of_a_busy_host`].
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            panic!("a # TYPE line without a name and type: {line}");
        };
        let suffixes: &[&str] = match kind {
            "counter" if name.ends_with("_total") => &[""],
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
            "summary" => &["", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

/// Every metric name each dashboard query and each alert rule names, by
/// where it is named.
fn named_metrics() -> Vec<(String, BTreeSet<String>)> {
    let mut named: Vec<(String, BTreeSet<String>)> = dashboard_queries()
        .into_iter()
        .map(|(place, expr)| (place, metric_names(&expr)))
        .collect();
    for rule in alert_rules() {
        let place = format!("alerts.yml: {}", rule["alert"]);
        named.push((
            place,
            metric_names(rule["expr"].as_str().unwrap_or_default()),
        ));
    }
    named
}

/// The tokenizer, on the shapes of PromQL the files use: it must find the
/// metric names (a misspelt one included) and nothing else, or the check
/// against the host's metrics would pass or fail for the wrong reason.
#[test]
fn the_tokenizer_finds_the_metric_names_of_an_expression() {
    let found = |expr: &str| metric_names(expr).into_iter().collect::<Vec<_>>();
    assert_eq!(
        found(
            "histogram_quantile(0.99, sum by (le, plugin) (rate(projector_batch_duration_seconds_bucket[$__rate_interval])))"
        ),
        ["projector_batch_duration_seconds_bucket"]
    );
    assert_eq!(
        found(
            r#"max by (plugin) (deriv(projector_consumer_lag{plugin=~"lab|x}"}[2m])) > 0 and max(projector_consumer_lag) > 0"#
        ),
        ["projector_consumer_lag"]
    );
    assert_eq!(
        found(r#"(count(jetstream_server_total_streams) or vector(0)) < count(up{job="nats"})"#),
        ["jetstream_server_total_streams", "up"]
    );
    assert_eq!(
        found("sum(rate(a_total[5m])) by (plugin) / on (plugin) group_left (host) b offset 1h"),
        ["a_total", "b"]
    );
    assert_eq!(
        found("projector_no_such_metric"),
        ["projector_no_such_metric"]
    );
    assert_eq!(
        found("sum without (le) (rate(x[1m])) * 1e3 + $offset"),
        ["x"]
    );
}

/// Each dashboard loads in Grafana and shows data: a title and a unique
/// uid, a schema version, panels with ids, and every data panel on the
/// provisioned data source with at least one query.
#[test]
fn dashboards_have_what_grafana_needs() {
    let datasource = yaml(DATASOURCE);
    let datasource_uid = datasource["datasources"][0]["uid"]
        .as_str()
        .expect("the provisioned data source has a uid")
        .to_owned();
    let mut uids = BTreeSet::new();
    for (file, dashboard) in dashboards() {
        for field in ["title", "uid"] {
            let value = dashboard[field].as_str().unwrap_or_default();
            assert!(!value.is_empty(), "{file}: no {field}");
        }
        let uid = dashboard["uid"].as_str().unwrap();
        // Grafana's limit, and the characters its URLs keep as they are.
        assert!(
            uid.len() <= 40
                && uid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{file}: uid {uid:?}"
        );
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} used twice");
        assert!(
            dashboard["schemaVersion"].is_u64(),
            "{file}: no schemaVersion"
        );
        let panels = panels(&dashboard);
        assert!(!panels.is_empty(), "{file}: no panels");
        let mut ids = BTreeSet::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title");
            assert!(panel["type"].is_string(), "{file}: {title}: no type");
            assert!(panel["gridPos"].is_object(), "{file}: {title}: no gridPos");
            let id = panel["id"].as_u64().expect("a panel id");
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            if shows_no_data(panel) {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"].as_str(),
                Some(datasource_uid.as_str()),
                "{file}: {title}: not on the provisioned data source"
            );
            let targets = panel["targets"].as_array().map(Vec::as_slice);
            let targets = targets.unwrap_or_default();
            assert!(!targets.is_empty(), "{file}: {title}: no targets");
            let mut ref_ids = BTreeSet::new();
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{file}: {title}: a target without expr"
                );
                let ref_id = target["refId"].as_str().unwrap_or_default();
                assert!(
                    ref_ids.insert(ref_id.to_owned()) && !ref_id.is_empty(),
                    "{file}: {title}: refId {ref_id:?} missing or used twice"
                );
            }
        }
    }
}

/// Each alert rule can be routed and read: a unique name, an expression, a
/// `for` duration, a severity and a summary.
#[test]
fn alert_rules_are_complete() {
    let mut names = BTreeSet::new();
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap_or_default();
        assert!(!name.is_empty(), "a rule without `alert`: {rule}");
        assert!(names.insert(name.to_owned()), "{name} is defined twice");
        let expr = rule["expr"].as_str().unwrap_or_default();
        assert!(!expr.trim().is_empty(), "{name}: no expr");
        // Every rule here waits: none should page on one odd scrape.
        let wait = rule["for"].as_str().unwrap_or_default();
        assert!(
            wait.len() > 1
                && wait[..wait.len() - 1].chars().all(|c| c.is_ascii_digit())
                && wait.ends_with(['s', 'm', 'h']),
            "{name}: `for` is {:?}, not a duration like 5m",
            rule["for"]
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: labels.severity is {severity:?}, not critical or warning"
        );
        let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
        assert!(!summary.trim().is_empty(), "{name}: no annotations.summary");
    }
}

/// A seed event carrying a code its extensible value set does not list,
/// as JSON: the host applies it and counts the code in
/// `projector_unknown_codes_total`.
fn event_with_an_unknown_code() -> (&'static str, String) {
    let field = FIELDS
        .iter()
        .find(|f| f.value_set.extensible && !f.path.ends_with("system"))
        .expect("an extensible coded field");
    let mut event: Value = SEED
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a seed event"))
        .find(|e| e["eventType"] == field.event_type)
        .expect("a seed event of the field's type");
    event["eventId"] = format!("monitoring-{}", uuid::Uuid::new_v4()).into();
    *event["payload"]
        .pointer_mut(&field.pointer())
        .expect("the seed event has the field") = "LOCAL-42".into();
    (field.event_type, event.to_string())
}

/// The `/metrics` text of a real host that has done some of everything:
/// the host writes a metric family only once it has a series, so it
/// projects the seed flow and an event with an unknown code (events,
/// batches, dead letters, parked events, document caches, unknown codes)
/// and answers API requests, one of them over its rate (request times,
/// rate limiting), before it is scraped.
async fn metrics_of_a_busy_host() -> String {
    let mut env = TestEnv::new("monitoring").await;
    env.config.api_rate_per_second = 1.try_into().unwrap();
    env.config.api_rate_burst = 1.try_into().unwrap();
    env.publish(SEED).await;
    let (event_type, event) = event_with_an_unknown_code();
    let mut publisher = env.publisher();
    publisher
        .publish_raw(event_type, None, event.into_bytes())
        .await
        .expect("published");
    publisher.flush().await.expect("stored");
    let host = env.start().await;
    env.settle(&host).await;
    let token = env.token("u-dr-smith", "physician");
    let mut statuses = Vec::new();
    while !statuses.contains(&429) && statuses.len() < 20 {
        statuses.push(env.get(&host, "/api/notifications", Some(&token)).await.0);
    }
    assert!(
        statuses[0] == 200 && statuses.contains(&429),
        "served, then refused over API_RATE_BURST: {statuses:?}"
    );
    let text = metrics(&host).await;
    host.stop();
    text
}

/// A metric renamed or removed in the host must not leave a panel empty or
/// an alert silent: every `projector_` name the dashboards and rules use is
/// on a real host's `/metrics`, and the cluster's metrics are watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_name_only_metrics_the_host_exports() {
    let text = metrics_of_a_busy_host().await;
    let exported = exported_names(&text);
    assert!(
        exported.contains("projector_events_applied_total")
            && exported.contains("projector_batch_duration_seconds_bucket"),
        "the host's /metrics: {text}"
    );

    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for (place, names) in named_metrics() {
        assert!(!names.is_empty(), "{place}: names no metric");
        for name in names {
            assert!(
                name == "up" || KNOWN_PREFIXES.iter().any(|p| name.starts_with(p)),
                "{place}: {name} is not a metric of the host, NATS or MinIO"
            );
            if name.starts_with("projector_") {
                if !exported.contains(&name) {
                    unknown.push(format!("{place}: {name}"));
                }
                used.insert(name);
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "named but not exported by the host:\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );
    // The cluster's own metrics (issue 16) are watched.
    for name in [
        "projector_cluster_members_live",
        "projector_projection_owned",
        "projector_notifications_overdue_acknowledgement",
    ] {
        assert!(used.contains(name), "no dashboard or rule uses {name}");
    }
}

/// The variables docker-compose.yml requires (`${NAME:?…}`): its secrets,
/// which have no defaults.
fn required_variables(compose: &str) -> BTreeSet<String> {
    compose
        .split("${")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest[name.len()..].starts_with(":?").then_some(name)
        })
        .collect()
}

/// `docker-compose config` on the repository's compose file with each
/// required variable set to a dummy value and nothing else from this
/// process's environment but `PATH`: its exit status, and what it printed.
fn compose_config(quiet: bool) -> (std::process::ExitStatus, String, String) {
    let file = repo_path("docker-compose.yml");
    let mut command = Command::new("docker-compose");
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("--file")
        .arg(&file)
        .arg("--project-directory")
        .arg(repo_path(""))
        .arg("config");
    if quiet {
        command.arg("--quiet");
    }
    for name in required_variables(&read("docker-compose.yml")) {
        command.env(
            &name,
            format!("dummy{}", name.to_lowercase().replace('_', "")),
        );
    }
    let output = command.output().unwrap_or_else(|e| {
        panic!("docker-compose cannot run ({e}): install Debian's docker-compose package")
    });
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The ports a service publishes on the machine, as `docker-compose
/// config` writes them (`{published, target}` or `"ip:published:target/tcp"`).
fn published_ports(service: &Value) -> BTreeSet<u64> {
    service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| match port {
            Value::String(text) => {
                let text = text.split('/').next().unwrap();
                let parts: Vec<&str> = text.split(':').collect();
                parts[parts.len() - 2].parse().expect("a port number")
            }
            _ => port["published"]
                .as_u64()
                .or_else(|| port["published"].as_str()?.parse().ok())
                .expect("a published port"),
        })
        .collect()
}

/// A service's environment variable as text, however the config wrote it.
fn environment(service: &Value, name: &str) -> String {
    match &service["environment"][name] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `docker-compose config` accepts the stack given only its required
/// variables, and the stack is the one issue 16 asks for: three NATS 2.12
/// nodes with JetStream, two hosts on all of them with replicated streams
/// and ports of their own, pinned images, and a Prometheus that scrapes
/// those services and loads the rules.
#[test]
fn the_compose_stack_is_valid_and_runs_the_cluster_hosts_and_monitoring() {
    let (status, _, stderr) = compose_config(true);
    assert!(status.success(), "docker-compose config --quiet: {stderr}");
    let (status, stdout, stderr) = compose_config(false);
    assert!(status.success(), "docker-compose config: {stderr}");
    let config: Value = serde_norway::from_str(&stdout).expect("the config is YAML");
    let services = config["services"].as_object().expect("services");
    for name in REQUIRED_SERVICES {
        assert!(services.contains_key(*name), "no service {name}");
    }

    // Every image is pinned to a version (the host's is built here).
    for (name, service) in services {
        if service.get("build").is_some() {
            continue;
        }
        let image = service["image"].as_str().unwrap_or_default();
        let tag = image
            .rsplit_once(':')
            .map(|(_, tag)| tag)
            .unwrap_or_default();
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{name}: image {image:?} is not pinned"
        );
    }

    // Three NATS nodes of one cluster, on 2.12, each with JetStream.
    for node in ["nats-1", "nats-2", "nats-3"] {
        let service = &services[node];
        let image = service["image"].as_str().unwrap();
        assert!(image.starts_with("nats:2.12."), "{node}: {image}");
        let command: Vec<&str> = service["command"]
            .as_array()
            .expect("a command")
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for argument in ["/etc/nats/cluster.conf", "-js", node] {
            assert!(command.contains(&argument), "{node}: {command:?}");
        }
    }

    // Two hosts on the whole cluster, with replicated streams, on ports of
    // their own.
    let mut ports = BTreeSet::new();
    for host in ["projector-1", "projector-2"] {
        let service = &services[host];
        let urls: BTreeSet<String> = environment(service, "NATS_URL")
            .split(',')
            .map(|url| url.trim().to_owned())
            .collect();
        let nodes: BTreeSet<String> = (1..=3).map(|i| format!("nats://nats-{i}:4222")).collect();
        assert_eq!(urls, nodes, "{host}: NATS_URL");
        assert_eq!(environment(service, "STREAM_REPLICAS"), "3", "{host}");
        let published = published_ports(service);
        assert_eq!(published.len(), 2, "{host}: {published:?}");
        assert!(ports.is_disjoint(&published), "{host} reuses {published:?}");
        ports.extend(published);
    }

    // Prometheus scrapes services of the stack: each host's HTTP port, an
    // exporter for each NATS node, MinIO; and loads the alert rules.
    let prometheus = yaml(PROMETHEUS);
    let rule_files = prometheus["rule_files"].as_array().expect("rule_files");
    assert!(
        rule_files
            .iter()
            .any(|f| f.as_str() == Some("/etc/prometheus/alerts.yml")),
        "prometheus.yml loads no alerts.yml: {rule_files:?}"
    );
    let mut targets = BTreeMap::<String, BTreeSet<String>>::new();
    for job in prometheus["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
    {
        let job_name = job["job_name"].as_str().expect("job_name").to_owned();
        for config in job["static_configs"].as_array().into_iter().flatten() {
            for target in config["targets"].as_array().into_iter().flatten() {
                let target = target.as_str().expect("a target");
                let (service, _) = target.split_once(':').expect("host:port");
                assert!(
                    services.contains_key(service),
                    "{job_name} scrapes {target}, not a service of the stack"
                );
                targets
                    .entry(job_name.clone())
                    .or_default()
                    .insert(target.to_owned());
            }
        }
    }
    let expect = |job: &str, wanted: &[&str]| {
        let wanted: BTreeSet<String> = wanted.iter().map(|t| t.to_string()).collect();
        assert_eq!(targets.get(job), Some(&wanted), "job {job}");
    };
    expect("projector", &["projector-1:3020", "projector-2:3020"]);
    expect(
        "nats",
        &[
            "nats-exporter-1:7777",
            "nats-exporter-2:7777",
            "nats-exporter-3:7777",
        ],
    );
    expect("minio", &["minio:9000"]);
}
