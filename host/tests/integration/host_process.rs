//! How the `projector serve` process itself runs, as an operator would
//! check it on the machine.

use crate::common::TestEnv;

/// With transparent huge pages on, every first touch of fresh heap or
/// plugin memory cleared a 2 MiB page: a tenth of the host's CPU in
/// `bench projection` (BENCHMARKS.md). The host turns them off for itself,
/// whatever the machine's setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_host_keeps_its_memory_in_small_pages() {
    let env = TestEnv::new("pages").await;
    let host = env.spawn_host().await;
    assert_eq!(host.status("THP_enabled"), "0");
    host.kill().await;
}
