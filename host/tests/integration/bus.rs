//! Issue 14: the host connects to a NATS server that requires credentials,
//! with the ones it is configured with, and is refused without them.

use crate::common::{PrivateNats, TestEnv};
use projector::serve::Host;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_connects_with_its_credentials_and_not_without() {
    let mut env = TestEnv::new("bus_auth").await;
    let nats = PrivateNats::start_with(
        &env.tag,
        &[
            "--user",
            "projector-host",
            "--pass",
            "a-password-of-the-host",
        ],
    )
    .await;
    env.config.nats_url = nats.url();

    let refused = projector::bus::connect(&env.config)
        .await
        .expect_err("no credentials, no connection");
    assert!(
        format!("{refused:#}")
            .to_lowercase()
            .contains("authorization"),
        "{refused:#}"
    );
    let mut wrong = env.config.clone();
    wrong.nats_user = Some("projector-host".into());
    wrong.nats_password = Some("guessed".into());
    assert!(projector::bus::connect(&wrong).await.is_err());

    env.config.nats_user = Some("projector-host".into());
    env.config.nats_password = Some("a-password-of-the-host".into());
    let client = projector::bus::connect(&env.config)
        .await
        .expect("connects with its credentials");
    client.publish("anything", "x".into()).await.unwrap();
    client.flush().await.unwrap();
    // A whole host starts on it: the stream made, the API ready.
    let host = Host::start(env.config.clone())
        .await
        .expect("the host starts");
    let (status, ready) = env.get(&host, "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["nats"], true);
    host.stop();
}
