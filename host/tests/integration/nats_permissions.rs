//! Issue 14: the compose stack's NATS permissions (`deploy/nats/nats.conf`),
//! on a real nats-server started with that very file. The host runs on its
//! user; each producing system publishes its own domain's event types, with
//! JetStream's acknowledgement, and nothing else; none of them reads what
//! the host reads; a wrong password gets no connection.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use async_nats::{Client, ConnectOptions, Event};
use futures::{StreamExt, TryStreamExt};
use projector::publish::Publisher;
use projector_events::Envelope;
use projector_events::payloads::EVENT_TYPES;

use crate::common::{PrivateNats, SEED, TestEnv, assert_seed_chart};

/// The host's user in the file.
const HOST_USER: &str = "projector";

/// The file the compose stack mounts into its NATS container.
fn conf_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/nats.conf")
}

/// The domain of an event type (its first segment), which is also the name
/// of the producing system's user.
fn domain_of(event_type: &str) -> &str {
    event_type.split('.').next().expect("a subject")
}

/// Every producing system: the domains of the event library's types.
fn systems() -> BTreeSet<&'static str> {
    EVENT_TYPES.iter().map(|(t, _)| domain_of(t)).collect()
}

/// The event types of one domain, from the event library.
fn event_types_of(system: &str) -> BTreeSet<&'static str> {
    EVENT_TYPES
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| domain_of(t) == system)
        .collect()
}

/// The environment variable the file reads `user`'s password from.
fn password_variable(user: &str) -> String {
    format!("NATS_{}_PASSWORD", user.to_uppercase())
}

/// The server's errors one connection was sent, as the server worded them.
#[derive(Clone, Default)]
struct ServerErrors(Arc<Mutex<Vec<String>>>);

impl ServerErrors {
    /// The subjects of the permission violations reported, once there are
    /// `count` of them or five seconds passed: the server sends each as it
    /// refuses, but the client hands them over on a task of its own.
    async fn violations(&self, count: usize) -> BTreeSet<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let subjects: BTreeSet<String> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter_map(|e| e.strip_prefix("Permissions Violation for "))
                .filter_map(|e| e.split('"').nth(1))
                .map(str::to_owned)
                .collect();
            if subjects.len() >= count || Instant::now() > deadline {
                return subjects;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// nats-server on the compose stack's file, on a free port, with a fresh
/// password for every user in its environment and its log in a file.
struct Stack {
    nats: PrivateNats,
    passwords: BTreeMap<String, String>,
    log: PathBuf,
}

impl Stack {
    async fn start(name: &str) -> Self {
        let tag = format!("{name}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        // Letters and digits, starting with a letter: what the file asks for
        // (the server parses a variable's value as it would the file's).
        let passwords: BTreeMap<String, String> = systems()
            .into_iter()
            .chain([HOST_USER])
            .map(|user| {
                (
                    user.to_owned(),
                    format!("p{}", uuid::Uuid::new_v4().simple()),
                )
            })
            .collect();
        let env: Vec<(String, &str)> = passwords
            .iter()
            .map(|(user, password)| (password_variable(user), password.as_str()))
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let log = std::env::temp_dir().join(format!("{tag}-nats.log"));
        let conf = conf_path();
        let args = ["-c", conf.to_str().unwrap(), "-l", log.to_str().unwrap()];
        let nats = PrivateNats::start_with_env(&tag, &args, &env).await;
        Self {
            nats,
            passwords,
            log,
        }
    }

    /// A test environment whose host connects as the host's user, with no
    /// subject prefix (the file names the subjects as the stack uses them);
    /// its stream is made already, on that user.
    async fn host_env(&self, name: &str) -> TestEnv {
        TestEnv::configured(name, |config| {
            config.nats_url = self.nats.url();
            config.nats_user = Some(HOST_USER.into());
            config.nats_password = Some(self.passwords[HOST_USER].clone());
            config.subject_prefix = String::new();
        })
        .await
    }

    /// A connection as `user` with `password`; a producing system's uses the
    /// inbox prefix the file gives it. The server's errors are collected.
    async fn connect_with(
        &self,
        user: &str,
        password: &str,
    ) -> Result<(Client, ServerErrors), async_nats::ConnectError> {
        let errors = ServerErrors::default();
        let collected = errors.clone();
        let mut options = ConnectOptions::new()
            .user_and_password(user.into(), password.into())
            .event_callback(move |event| {
                let collected = collected.clone();
                async move {
                    if let Event::ServerError(e) = event {
                        let text = e.to_string();
                        let text = text.strip_prefix("nats: ").unwrap_or(&text);
                        collected.0.lock().unwrap().push(text.to_owned());
                    }
                }
            });
        if user != HOST_USER {
            options = options.custom_inbox_prefix(format!("_INBOX_{user}"));
        }
        let client = options.connect(self.nats.url()).await?;
        Ok((client, errors))
    }

    /// A connection as `user` with its password.
    async fn connect(&self, user: &str) -> (Client, ServerErrors) {
        self.connect_with(user, &self.passwords[user])
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"))
    }

    /// The server's log lines of permission violations by `user`.
    fn violations_logged(&self, user: &str) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let by = format!("User \"{user}\"");
        log.lines()
            .filter(|line| line.contains("Violation") && line.contains(&by))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Every message of the stream, by subject and count, as the host sees it.
async fn stored(env: &TestEnv) -> BTreeMap<String, usize> {
    let stream = env
        .js
        .get_stream(&env.config.stream_name)
        .await
        .expect("stream");
    stream
        .info_with_subjects(">")
        .await
        .expect("stream info")
        .try_collect()
        .await
        .expect("subjects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_runs_on_its_user_and_each_system_publishes_its_own_events() {
    let stack = Stack::start("perm_host").await;
    let env = stack.host_env("perm_host").await;
    let (watcher, _) = stack.connect(HOST_USER).await;
    let mut announcements = watcher
        .subscribe("projector.notifications")
        .await
        .expect("the host's user subscribes to its subjects");
    watcher.flush().await.unwrap();
    let host = env.start().await;

    // The seed flow, each event published by its own domain's system, in
    // order, each acknowledged by JetStream before the next.
    // They connect as `projector publish` does, from the configuration.
    let mut publishers = BTreeMap::new();
    for system in systems() {
        let mut config = env.config.clone();
        config.nats_user = Some(system.to_owned());
        config.nats_password = Some(stack.passwords[system].clone());
        config.nats_inbox_prefix = Some(format!("_INBOX_{system}"));
        let client = projector::bus::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("{system} connects: {e:#}"));
        publishers.insert(system, Publisher::new(jetstream::new(client), ""));
    }
    for line in SEED.lines().filter(|l| !l.trim().is_empty()) {
        let event = Envelope::parse(line.as_bytes()).expect("a seed event");
        let publisher = publishers
            .get_mut(domain_of(&event.envelope.event_type))
            .expect("a system for every domain");
        publisher.publish(&event).await.expect("published");
        publisher.flush().await.expect("stored, by JetStream's ack");
    }
    env.settle(&host).await;

    let token = env.token("u-dr-smith", "provider");
    let (status, chart) = env
        .get(&host, "/api/aggregate/patients/p-john-doe", Some(&token))
        .await;
    assert_eq!(status, 200, "{chart}");
    assert_seed_chart(&chart);
    // The host announced the critical alerts on its core subject.
    let announced = tokio::time::timeout(Duration::from_secs(30), announcements.next())
        .await
        .expect("an announcement of the seed's alerts")
        .expect("the subscription is open");
    let wire: serde_json::Value = serde_json::from_slice(&announced.payload).unwrap();
    assert_eq!(wire["kind"], "notifications", "{wire}");
    host.stop();

    assert_eq!(
        stack.violations_logged(HOST_USER),
        Vec::<String>::new(),
        "the host needs nothing the file does not give it"
    );
    for system in systems() {
        assert_eq!(stack.violations_logged(system), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_publishes_its_own_event_types_and_nothing_else() {
    let stack = Stack::start("perm_publish").await;
    let env = stack.host_env("perm_publish").await;
    let (watcher, _) = stack.connect(HOST_USER).await;
    let mut host_subjects = watcher.subscribe("projector.>").await.unwrap();
    watcher.flush().await.unwrap();

    for system in systems() {
        let (client, errors) = stack.connect(system).await;
        let js = jetstream::new(client.clone());
        for event_type in event_types_of(system) {
            let ack = js
                .publish(event_type, format!("from {system}").into())
                .await
                .expect("sent")
                .await
                .unwrap_or_else(|e| panic!("{system} publishes {event_type}: {e}"));
            assert_eq!(ack.stream, env.config.stream_name);
        }
        // Everyone else's event types, a subject of its own domain that is
        // no event type, and the host's subjects: all refused.
        let refused: BTreeSet<String> = EVENT_TYPES
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| domain_of(t) != system)
            .map(str::to_owned)
            .chain([
                format!("{system}.unlisted.event"),
                "projector.notifications".into(),
                "projector.plugins".into(),
            ])
            .collect();
        for subject in &refused {
            client
                .publish(subject.clone(), format!("forged by {system}").into())
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        assert_eq!(
            errors.violations(refused.len()).await,
            refused,
            "the server tells {system} what it refused"
        );
        assert_eq!(stack.violations_logged(system).len(), refused.len());
    }

    // Each event type is stored once, from its own system; nothing else is.
    let expected: BTreeMap<String, usize> = EVENT_TYPES
        .iter()
        .map(|(t, _)| (t.to_string(), 1))
        .collect();
    assert_eq!(stored(&env).await, expected);
    // Nothing reached the host's subjects: the first message there is the
    // host's own, published after every refusal.
    watcher
        .publish("projector.notifications", "the host's".into())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), host_subjects.next())
        .await
        .expect("the host's own message arrives")
        .unwrap();
    assert_eq!(first.payload.as_ref(), b"the host's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_reads_nothing_the_host_reads() {
    let stack = Stack::start("perm_read").await;
    let env = stack.host_env("perm_read").await;
    let stream = env
        .js
        .get_stream(&env.config.stream_name)
        .await
        .expect("stream");
    let (lab, errors) = stack.connect("lab").await;
    let forbidden = ["_INBOX.>", "projector.>", "lab.>", ">"];
    let mut snoops = Vec::new();
    for subject in forbidden {
        snoops.push(lab.subscribe(subject).await.unwrap());
    }
    lab.flush().await.unwrap();
    // Nor may it read the stream through a consumer of its own.
    let consumer = jetstream::new(lab.clone())
        .create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some("lab-snoop".into()),
                ..Default::default()
            },
            env.config.stream_name.as_str(),
        )
        .await;
    assert!(consumer.is_err(), "lab made a consumer");
    let mut refused: BTreeSet<String> = forbidden.iter().map(|s| s.to_string()).collect();
    let violations = errors.violations(refused.len() + 1).await;
    let api: Vec<&String> = violations
        .iter()
        .filter(|s| s.starts_with("$JS.API.CONSUMER."))
        .collect();
    assert_eq!(api.len(), 1, "{violations:?}");
    refused.insert(api[0].clone());
    assert_eq!(violations, refused);

    // The lab publishes a result; the host pulls it (onto an `_INBOX.`
    // subject of its own); lab's refused subscriptions get nothing.
    jetstream::new(lab.clone())
        .publish("lab.result.available", "a result".into())
        .await
        .unwrap()
        .await
        .expect("stored");
    let reader = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("host-reader".into()),
            ..Default::default()
        })
        .await
        .expect("the host makes consumers");
    let mut batch = reader.fetch().max_messages(1).messages().await.unwrap();
    let pulled = batch.next().await.expect("a message").expect("pulled");
    assert_eq!(pulled.payload.as_ref(), b"a result");
    pulled.ack().await.expect("the host acknowledges");
    let consumers: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    assert_eq!(consumers, ["host-reader"]);
    for mut snoop in snoops {
        let got = tokio::time::timeout(Duration::from_millis(500), snoop.next()).await;
        assert!(
            !matches!(got, Ok(Some(_))),
            "lab read {:?}",
            got.map(|m| m.map(|m| m.subject))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_gets_no_connection() {
    let stack = Stack::start("perm_auth").await;
    for (user, password) in [
        ("lab", "guessed"),
        ("lab", stack.passwords["pharmacy"].as_str()),
        (HOST_USER, stack.passwords["lab"].as_str()),
        ("nobody", stack.passwords["lab"].as_str()),
    ] {
        let refused = stack.connect_with(user, password).await;
        let error = refused.err().unwrap_or_else(|| panic!("{user} connected"));
        assert!(
            error.to_string().to_lowercase().contains("authorization"),
            "{user}: {error}"
        );
    }
    let anonymous = async_nats::connect(stack.nats.url()).await;
    assert!(anonymous.is_err(), "connected without credentials");
    // The right password does connect: the refusals are the passwords'.
    let (lab, _) = stack.connect("lab").await;
    lab.flush().await.expect("connected");
}

/// Each producing system's publish list in the file is exactly its domain's
/// event types in the event library, so the file cannot drift from it: a
/// new event type must be given to its system, a removed one taken back.
#[test]
fn the_file_gives_each_system_its_domains_event_types() {
    let conf = std::fs::read_to_string(conf_path()).expect("the file");
    let mut allowed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut user = None;
    for line in conf.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix("user:") {
            user = Some(name.trim().to_owned());
        } else if let Some(list) = line.strip_prefix("publish:") {
            let name = user.clone().expect("publish: inside a user");
            let subjects = list
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_owned())
                .collect();
            allowed.insert(name, subjects);
        }
    }
    for system in systems() {
        let expected: BTreeSet<String> = event_types_of(system)
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(allowed.remove(system), Some(expected), "{system}");
    }
    assert!(allowed.remove(HOST_USER).is_some(), "the host's user");
    assert_eq!(allowed, BTreeMap::new(), "users the tests do not know");
}
