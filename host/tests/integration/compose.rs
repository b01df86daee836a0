//! Issue 14: the compose stack's MinIO set-up agrees with the host's code.
//! The host's MinIO user may not create buckets, so the stack's one-shot
//! job must make every bucket the host uses, and the user's policy must
//! name each of them: a bucket added to the code and not here would leave
//! the host retrying at start in the stack.

use std::collections::BTreeSet;
use std::path::PathBuf;

use projector::objects::BUCKETS;
use serde_json::Value;

/// A file of the repository.
fn read(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The host's buckets.
fn buckets() -> BTreeSet<String> {
    BUCKETS.iter().map(|b| b.to_string()).collect()
}

#[test]
fn the_stack_makes_every_bucket_the_host_uses() {
    let compose = read("docker-compose.yml");
    let made: BTreeSet<String> = compose
        .lines()
        .filter_map(|line| line.trim().strip_prefix("for b in "))
        .flat_map(|list| list.trim_end_matches("; do").split_whitespace())
        .map(str::to_owned)
        .collect();
    assert_eq!(made, buckets());
}

#[test]
fn the_hosts_minio_policy_names_every_bucket_and_nothing_else() {
    let policy: Value =
        serde_json::from_str(&read("deploy/minio/projector-host-policy.json")).expect("JSON");
    let mut named = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("statements") {
        for resource in statement["Resource"].as_array().expect("resources") {
            let arn = resource.as_str().expect("an ARN");
            let bucket = arn.strip_prefix("arn:aws:s3:::").expect("an S3 ARN");
            let bucket = bucket.split('/').next().unwrap();
            if bucket != "*" {
                named.insert(bucket.to_owned());
            }
        }
    }
    assert_eq!(named, buckets());
}
