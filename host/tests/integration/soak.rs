//! A few minutes of live traffic over thousands of returning patients into
//! a database whose tables have autovacuum off, through a `projector serve`
//! process: no projection's lag grows without bound, and every lag is 0
//! soon after the traffic stops. (`projector bench soak` runs the same for
//! longer and prints it; BENCHMARKS.md has its figures.)

use std::time::Duration;

use crate::common::TestEnv;
use projector::bench::soak::{Load, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_stays_bounded_under_live_traffic_without_autovacuum() {
    let _heavy = crate::common::heavy().await;
    const RATE: u32 = 300;
    let env = TestEnv::new("soak").await;
    let load = Load {
        rate: RATE,
        patients: 3_000,
        duration: Duration::from_secs(150),
        report_every: Duration::from_secs(10),
        executable: env!("CARGO_BIN_EXE_projector").into(),
        autovacuum_off: true,
    };
    let report = run(env.config.clone(), load).await.expect("the soak runs");

    assert!(
        report.published >= u64::from(RATE) * 140,
        "{} published",
        report.published
    );
    // Bounded: after the first minute no projection is more than 10 s of
    // traffic behind.
    let bound = u64::from(RATE) * 10;
    assert!(
        report.worst_lag <= bound,
        "worst lag {} > {bound}",
        report.worst_lag
    );
    let drained = report
        .drained_in
        .expect("every lag reaches 0 after the traffic");
    assert!(drained <= Duration::from_secs(60), "drained in {drained:?}");
}
